//! The backends are protocol-neutral: the File and the Proxy backend are driven here through
//! an in-memory [`Downstream`] — no HTTP/1 writer, no client socket — and what they hand it
//! (status, fields, the body source and its bytes, what they read of the request body) is
//! checked. A backend that wrote protocol bytes to the client itself would fail these.

use std::io::{Read, Write};
use std::mem::ManuallyDrop;
use std::net::TcpListener;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use monoio::net::TcpStream;
use zerocopy_server::config::Backend;
use zerocopy_server::error::Error;
use zerocopy_server::exchange::{Body, BodyLimits, Downstream};
use zerocopy_server::http::h1::request::parse;
use zerocopy_server::http::request::RequestHead;
use zerocopy_server::http::response::ResponseHead;
use zerocopy_server::metrics::{Registry, WorkerStats};
use zerocopy_server::net::client::ClientStream;
use zerocopy_server::server::WorkerCtx;
use zerocopy_server::snapshot::Snapshot;

/// What a backend handed the client side.
#[derive(Debug, Default)]
struct Memory {
    /// The request body still to come, in the pieces it arrives in.
    incoming: Vec<Vec<u8>>,
    /// Bytes of the request body arrived and not taken.
    arrived: Vec<u8>,
    interim: Vec<u16>,
    status: Option<u16>,
    fields: Vec<(String, String)>,
    /// The body source the backend chose: "empty", "bytes", "file" or "stream".
    source: &'static str,
    length: Option<u64>,
    body: Vec<u8>,
    ended: bool,
    reset: bool,
}

impl Downstream for Memory {
    fn set_limits(&mut self, _: BodyLimits) {}

    fn set_request_id(&mut self, _: zerocopy_server::telemetry::IdField) {}

    fn take_body(&mut self, each: &mut dyn FnMut(&[u8])) -> Result<bool, Error> {
        if !self.arrived.is_empty() {
            each(&std::mem::take(&mut self.arrived));
        }
        Ok(self.incoming.is_empty())
    }

    async fn continue_body(&mut self) -> Result<(), Error> {
        Ok(())
    }

    async fn more_body(&mut self) -> Result<(), Error> {
        if !self.incoming.is_empty() {
            let next = self.incoming.remove(0);
            self.arrived.extend_from_slice(&next);
        }
        Ok(())
    }

    fn body_trailers(&self) -> &[u8] {
        &[]
    }

    fn abandon_body(&mut self) {}

    async fn send_interim(&mut self, head: ResponseHead) -> Result<(), Error> {
        self.interim.push(head.status());
        Ok(())
    }

    async fn respond(&mut self, head: ResponseHead, body: Body<'_>) -> Result<(), Error> {
        assert!(self.status.is_none(), "one final response");
        self.status = Some(head.status());
        self.fields = head
            .fields()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        (self.source, self.length) = match body {
            Body::Empty { length } => ("empty", length),
            Body::Bytes(b) => {
                self.body.extend_from_slice(b);
                ("bytes", Some(b.len() as u64))
            }
            Body::File {
                fd, offset, len, ..
            } => {
                // SAFETY: the backend's descriptor, open for this call; not closed here.
                let file = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
                let mut bytes = vec![0; len as usize];
                file.read_exact_at(&mut bytes, offset).unwrap();
                self.body = bytes;
                ("file", Some(len))
            }
            Body::Stream { length, .. } => ("stream", length),
        };
        Ok(())
    }

    async fn send_data(&mut self, data: &[u8]) -> Result<(), Error> {
        assert_eq!(self.source, "stream");
        self.body.extend_from_slice(data);
        Ok(())
    }

    async fn end_body(&mut self, _trailers: &[u8]) -> Result<(), Error> {
        self.ended = true;
        Ok(())
    }

    fn reset(&mut self) {
        self.reset = true;
    }

    fn plain_socket(&mut self) -> Option<(&TcpStream, &mut u64)> {
        None
    }

    async fn switch_protocols(
        &mut self,
        _head: ResponseHead,
    ) -> Result<Option<(&mut ClientStream, Vec<u8>)>, Error> {
        Ok(None)
    }
}

impl Memory {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_framing_fields(&self) -> bool {
        ["content-length", "transfer-encoding", "connection"]
            .iter()
            .any(|f| self.field(f).is_some())
    }
}

fn snapshot(toml: &str) -> Snapshot {
    let config = zerocopy_server::config::parse(toml, Path::new("test.toml")).unwrap();
    let sessions = zerocopy_server::tls::sessions::Sessions::new();
    Snapshot::build(
        config,
        1,
        &Registry::new(1),
        &zerocopy_server::group::Fleet::default(),
        &sessions,
    )
    .unwrap()
}

fn request(raw: &str) -> RequestHead {
    parse(raw.as_bytes(), 8192).unwrap().unwrap().0
}

/// A runtime as a worker's: with the file I/O threads the File backend hands cold opens to.
fn run<F: std::future::Future>(f: F) -> F::Output {
    let threads = zerocopy_server::net::offload::start(2, std::time::Duration::from_secs(10));
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .attach_thread_pool(Box::new(threads.unwrap()))
        .build()
        .unwrap()
        .block_on(f)
}

async fn serve_file(s: &Snapshot, raw: &str) -> Memory {
    let req = request(raw);
    let m = s.router.lookup("site", &req.path).unwrap();
    let Backend::File(f) = &m.entry.route.backend else {
        panic!("a File route")
    };
    let mut sink = Memory::default();
    let worker = WorkerCtx::new(0);
    let stats = WorkerStats::default();
    let cache = &s.config.performance.file_cache;
    zerocopy_server::files::serve(&mut sink, &req, &m, f, cache, &worker.files, &stats)
        .await
        .unwrap();
    sink
}

#[test]
fn the_file_backend_answers_through_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), b"hello, world").unwrap();
    // From disk (the file cache off), from the file cache, and from memory mode.
    for (mode, cache, want) in [
        ("sendfile", 0, "file"),
        ("sendfile", 65536, "bytes"),
        ("memory", 0, "bytes"),
    ] {
        let s = snapshot(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [performance]\nfile_cache_max_file_size = {cache}\n\
             [path_routes.\"site\".\"/f/\"]\ntype = \"File\"\npath = \"{}/\"\nmode = \"{mode}\"\n",
            dir.path().display()
        ));
        run(async {
            let get = serve_file(&s, "GET /f/hello.txt HTTP/1.1\r\nHost: site\r\n\r\n").await;
            assert_eq!(get.status, Some(200), "{mode}");
            assert_eq!(get.body, b"hello, world");
            assert_eq!(get.length, Some(12));
            assert_eq!(
                get.source, want,
                "{mode}, cache {cache}: the file's bytes as a source"
            );
            assert_eq!(get.field("content-type"), Some("text/plain"));
            assert!(get.field("etag").is_some() && get.field("last-modified").is_some());
            assert!(
                !get.has_framing_fields(),
                "framing is the protocol's: {get:?}"
            );

            let range = serve_file(
                &s,
                "GET /f/hello.txt HTTP/1.1\r\nHost: site\r\nRange: bytes=7-\r\n\r\n",
            )
            .await;
            assert_eq!(range.status, Some(206));
            assert_eq!(range.body, b"world");
            assert_eq!(range.field("content-range"), Some("bytes 7-11/12"));

            let head = serve_file(&s, "HEAD /f/hello.txt HTTP/1.1\r\nHost: site\r\n\r\n").await;
            assert_eq!((head.source, head.length), ("empty", Some(12)));

            let etag = get.field("etag").unwrap();
            let again = serve_file(
                &s,
                &format!(
                    "GET /f/hello.txt HTTP/1.1\r\nHost: site\r\nIf-None-Match: {etag}\r\n\r\n"
                ),
            )
            .await;
            assert_eq!(
                (again.status, again.source, again.length),
                (Some(304), "empty", None)
            );
        });
    }
}

/// An upstream for one request: it reads the head and a `Content-Length` body, and answers
/// with `answer(body)`. Returns its address.
fn upstream(
    answer: fn(&[u8]) -> Vec<u8>,
) -> (std::net::SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            let n = s.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        while got.len() < head_end + len {
            let n = s.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(&answer(&got[head_end..])).unwrap();
        got
    });
    (addr, handle)
}

async fn forward(s: &Snapshot, sink: &mut Memory, raw: &str) {
    let req = request(raw);
    let m = s.router.lookup("site", &req.path).unwrap();
    let Backend::Proxy(p) = &m.entry.route.backend else {
        panic!("a Proxy route")
    };
    let zerocopy_server::route::Target::Upstream(path) = m.target() else {
        panic!("an upstream path")
    };
    let worker = WorkerCtx::new(0);
    let exchange = zerocopy_server::proxy::Exchange {
        ds: sink,
        tls: false,
        peer: "192.0.2.7:5000".parse().unwrap(),
        client: "192.0.2.7".parse().unwrap(),
        req: &req,
        backend: p,
        group: m.entry.group.as_ref().unwrap(),
        security: &m.entry.route.security,
        request_headers: &m.entry.site.request_headers,
        ids: None,
        path: &path,
        worker: 0,
        pool: &worker.upstreams,
        h2pool: &worker.h2upstreams,
        pipes: &worker.pipes,
    };
    let mut trace = Default::default();
    zerocopy_server::proxy::forward(exchange, &mut trace)
        .await
        .unwrap();
}

fn proxy_snapshot(addr: std::net::SocketAddr) -> Snapshot {
    snapshot(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [path_routes.\"site\".\"/api/\"]\ntype = \"Proxy\"\nurl = \"http://{addr}/\"\n"
    ))
}

#[test]
fn the_proxy_backend_reads_the_body_and_answers_through_the_sink() {
    // A request body in three pieces, through the sink; the answer has a known length.
    let (addr, up) = upstream(|body| {
        let mut out = format!(
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
             HTTP/1.1 201 Created\r\nX-Up: 1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    });
    let s = proxy_snapshot(addr);
    let mut sink = Memory {
        incoming: vec![b"abc".to_vec(), b"defg".to_vec()],
        arrived: b"01".to_vec(),
        ..Memory::default()
    };
    run(forward(
        &s,
        &mut sink,
        "POST /api/items HTTP/1.1\r\nHost: site\r\nContent-Length: 9\r\n\r\n",
    ));
    let sent = String::from_utf8(up.join().unwrap()).unwrap();
    assert!(sent.starts_with("POST /items HTTP/1.1\r\n"), "{sent}");
    assert!(
        sent.ends_with("\r\n\r\n01abcdefg"),
        "the body the sink gave: {sent}"
    );
    assert_eq!(sink.interim, [103]);
    assert_eq!(sink.status, Some(201));
    assert_eq!(sink.field("x-up"), Some("1"));
    assert!(!sink.has_framing_fields(), "{sink:?}");
    assert_eq!(sink.body, b"01abcdefg");
    assert_eq!(sink.length, Some(9));
    assert!(!sink.reset);
}

#[test]
fn a_chunked_upstream_answer_is_a_stream_of_decoded_data() {
    let (addr, up) = upstream(|_| {
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
            .to_vec()
    });
    let s = proxy_snapshot(addr);
    let mut sink = Memory::default();
    run(forward(
        &s,
        &mut sink,
        "GET /api/x HTTP/1.1\r\nHost: site\r\n\r\n",
    ));
    up.join().unwrap();
    assert_eq!(sink.status, Some(200));
    assert_eq!((sink.source, sink.length), ("stream", None));
    assert_eq!(sink.body, b"hello, world", "decoded: no chunk framing");
    assert!(sink.ended);
    assert!(!sink.has_framing_fields(), "{sink:?}");
}
