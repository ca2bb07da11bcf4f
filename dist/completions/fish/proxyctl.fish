# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_proxyctl_global_optspecs
    string join \n socket= json h/help V/version
end

function __fish_proxyctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_proxyctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_proxyctl_using_subcommand
    set -l cmd (__fish_proxyctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c proxyctl -n "__fish_proxyctl_needs_command" -l socket -d 'Path of the daemon\'s admin socket' -r -F
complete -c proxyctl -n "__fish_proxyctl_needs_command" -l json -d 'Print the daemon\'s answer as JSON instead of text'
complete -c proxyctl -n "__fish_proxyctl_needs_command" -s h -l help -d 'Print help'
complete -c proxyctl -n "__fish_proxyctl_needs_command" -s V -l version -d 'Print version'
complete -c proxyctl -n "__fish_proxyctl_needs_command" -f -a "status" -d 'Show what the daemon is doing: state, uptime, generation, load, last reload'
complete -c proxyctl -n "__fish_proxyctl_needs_command" -f -a "reload" -d 'Re-read the config file and swap it in now; exit 1 if the daemon refuses it'
complete -c proxyctl -n "__fish_proxyctl_needs_command" -f -a "upgrade" -d 'Replace the daemon\'s binary without refusing a connection: start BINARY (default: the daemon\'s own path), hand it the listening sockets, and drain once it serves. Exit 1 when the new binary fails (it is killed; the running daemon serves on)'
complete -c proxyctl -n "__fish_proxyctl_needs_command" -f -a "drain" -d 'Stop the daemon gracefully: wait for open connections to finish, then exit'
complete -c proxyctl -n "__fish_proxyctl_needs_command" -f -a "routes" -d 'List the active routes and their policies'
complete -c proxyctl -n "__fish_proxyctl_needs_command" -f -a "explain" -d 'Show which route a request for HOST and PATH would hit and what the daemon would answer; exit 0 only when it would be served (forwarded, or a file sent), else 1'
complete -c proxyctl -n "__fish_proxyctl_needs_command" -f -a "check" -d 'Validate a config file without applying it, and show what a reload would change; exit 1 if it is invalid'
complete -c proxyctl -n "__fish_proxyctl_needs_command" -f -a "upstreams" -d 'Show the upstream groups and the state of each server: health, ejection, drain, in-flight requests, failures, the last check and the last change'
complete -c proxyctl -n "__fish_proxyctl_needs_command" -f -a "upstream" -d 'Drain, disable or enable one server of a group, without a reload (kept across reloads while the server exists). Drain: no new requests, in-flight ones finish, idle pooled connections close; disable: as drain, and its active checks pause'
complete -c proxyctl -n "__fish_proxyctl_needs_command" -f -a "stats" -d 'Show counters since start: requests, status classes, latency and bytes per route; upstream connections; connections per worker; reloads; dropped log lines'
complete -c proxyctl -n "__fish_proxyctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand status" -l socket -d 'Path of the daemon\'s admin socket' -r -F
complete -c proxyctl -n "__fish_proxyctl_using_subcommand status" -l json -d 'Print the daemon\'s answer as JSON instead of text'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand reload" -l socket -d 'Path of the daemon\'s admin socket' -r -F
complete -c proxyctl -n "__fish_proxyctl_using_subcommand reload" -l json -d 'Print the daemon\'s answer as JSON instead of text'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand reload" -s h -l help -d 'Print help'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand upgrade" -l binary -d 'The new binary (default: the path the daemon was started from)' -r -F
complete -c proxyctl -n "__fish_proxyctl_using_subcommand upgrade" -l socket -d 'Path of the daemon\'s admin socket' -r -F
complete -c proxyctl -n "__fish_proxyctl_using_subcommand upgrade" -l json -d 'Print the daemon\'s answer as JSON instead of text'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand upgrade" -s h -l help -d 'Print help'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand drain" -l timeout -d 'Give up on open connections after this many seconds (default: the daemon\'s `[server] shutdown_timeout_secs`)' -r
complete -c proxyctl -n "__fish_proxyctl_using_subcommand drain" -l socket -d 'Path of the daemon\'s admin socket' -r -F
complete -c proxyctl -n "__fish_proxyctl_using_subcommand drain" -l json -d 'Print the daemon\'s answer as JSON instead of text'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand drain" -s h -l help -d 'Print help'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand routes" -l socket -d 'Path of the daemon\'s admin socket' -r -F
complete -c proxyctl -n "__fish_proxyctl_using_subcommand routes" -l json -d 'Print the daemon\'s answer as JSON instead of text'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand routes" -s h -l help -d 'Print help'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand explain" -s X -l method -d 'The request\'s method' -r
complete -c proxyctl -n "__fish_proxyctl_using_subcommand explain" -l from -d 'The client\'s address, checked against allowed_ips / denied_ips' -r
complete -c proxyctl -n "__fish_proxyctl_using_subcommand explain" -l accept-encoding -d 'The request\'s Accept-Encoding (e.g. "gzip, br"): which coding it would get' -r
complete -c proxyctl -n "__fish_proxyctl_using_subcommand explain" -l socket -d 'Path of the daemon\'s admin socket' -r -F
complete -c proxyctl -n "__fish_proxyctl_using_subcommand explain" -l json -d 'Print the daemon\'s answer as JSON instead of text'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand explain" -s h -l help -d 'Print help'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand check" -l socket -d 'Path of the daemon\'s admin socket' -r -F
complete -c proxyctl -n "__fish_proxyctl_using_subcommand check" -l json -d 'Print the daemon\'s answer as JSON instead of text'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand check" -s h -l help -d 'Print help'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand upstreams" -l socket -d 'Path of the daemon\'s admin socket' -r -F
complete -c proxyctl -n "__fish_proxyctl_using_subcommand upstreams" -l json -d 'Print the daemon\'s answer as JSON instead of text'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand upstreams" -s h -l help -d 'Print help'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand upstream" -l socket -d 'Path of the daemon\'s admin socket' -r -F
complete -c proxyctl -n "__fish_proxyctl_using_subcommand upstream" -l json -d 'Print the daemon\'s answer as JSON instead of text'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand upstream" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand stats" -l count -d 'With --watch: stop after this many refreshes' -r
complete -c proxyctl -n "__fish_proxyctl_using_subcommand stats" -l socket -d 'Path of the daemon\'s admin socket' -r -F
complete -c proxyctl -n "__fish_proxyctl_using_subcommand stats" -l watch -d 'Refresh once a second, with rates and percentiles over the last second (Ctrl-C stops). With --json: one JSON document per line per refresh'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand stats" -l json -d 'Print the daemon\'s answer as JSON instead of text'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand stats" -s h -l help -d 'Print help'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand help; and not __fish_seen_subcommand_from status reload upgrade drain routes explain check upstreams upstream stats help" -f -a "status" -d 'Show what the daemon is doing: state, uptime, generation, load, last reload'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand help; and not __fish_seen_subcommand_from status reload upgrade drain routes explain check upstreams upstream stats help" -f -a "reload" -d 'Re-read the config file and swap it in now; exit 1 if the daemon refuses it'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand help; and not __fish_seen_subcommand_from status reload upgrade drain routes explain check upstreams upstream stats help" -f -a "upgrade" -d 'Replace the daemon\'s binary without refusing a connection: start BINARY (default: the daemon\'s own path), hand it the listening sockets, and drain once it serves. Exit 1 when the new binary fails (it is killed; the running daemon serves on)'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand help; and not __fish_seen_subcommand_from status reload upgrade drain routes explain check upstreams upstream stats help" -f -a "drain" -d 'Stop the daemon gracefully: wait for open connections to finish, then exit'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand help; and not __fish_seen_subcommand_from status reload upgrade drain routes explain check upstreams upstream stats help" -f -a "routes" -d 'List the active routes and their policies'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand help; and not __fish_seen_subcommand_from status reload upgrade drain routes explain check upstreams upstream stats help" -f -a "explain" -d 'Show which route a request for HOST and PATH would hit and what the daemon would answer; exit 0 only when it would be served (forwarded, or a file sent), else 1'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand help; and not __fish_seen_subcommand_from status reload upgrade drain routes explain check upstreams upstream stats help" -f -a "check" -d 'Validate a config file without applying it, and show what a reload would change; exit 1 if it is invalid'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand help; and not __fish_seen_subcommand_from status reload upgrade drain routes explain check upstreams upstream stats help" -f -a "upstreams" -d 'Show the upstream groups and the state of each server: health, ejection, drain, in-flight requests, failures, the last check and the last change'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand help; and not __fish_seen_subcommand_from status reload upgrade drain routes explain check upstreams upstream stats help" -f -a "upstream" -d 'Drain, disable or enable one server of a group, without a reload (kept across reloads while the server exists). Drain: no new requests, in-flight ones finish, idle pooled connections close; disable: as drain, and its active checks pause'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand help; and not __fish_seen_subcommand_from status reload upgrade drain routes explain check upstreams upstream stats help" -f -a "stats" -d 'Show counters since start: requests, status classes, latency and bytes per route; upstream connections; connections per worker; reloads; dropped log lines'
complete -c proxyctl -n "__fish_proxyctl_using_subcommand help; and not __fish_seen_subcommand_from status reload upgrade drain routes explain check upstreams upstream stats help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
