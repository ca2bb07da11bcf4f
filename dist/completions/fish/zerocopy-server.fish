complete -c zerocopy-server -s c -l config -d 'The config file (TOML)' -r -F
complete -c zerocopy-server -l io-driver -d 'The workers\' I/O: io_uring, epoll, or auto (io_uring when the kernel allows it)' -r -f -a "auto\t'io_uring when the kernel supports it, epoll otherwise'
uring\t'io_uring only; start-up fails without it'
epoll\t'epoll (monoio\'s legacy driver), even where io_uring works'"
complete -c zerocopy-server -l upgrade-fd -d 'Internal: the hand-over channel of a binary upgrade (set by the running daemon)' -r
complete -c zerocopy-server -l check -d 'Check the config file (every error with file, line and key path) and exit: 0 when it is valid, 1 when not. Starts nothing'
complete -c zerocopy-server -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zerocopy-server -s V -l version -d 'Print version'
