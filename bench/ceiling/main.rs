//! The ceiling of this architecture on this machine: one pinned monoio io_uring thread, an
//! `SO_REUSEPORT` listener, and a connection loop that answers every request with the same
//! fixed response (a 1 KiB body) — no parsing beyond finding the end of each head, no routing,
//! no files, no policy. `bench/run.py` measures it beside zerocopy-server and nginx and reports
//! every case as a share of it.
//!
//! `cargo run --release --example ceiling -- 127.0.0.1:18999`

use std::net::SocketAddr;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};

const BODY: [u8; 1024] = [b'x'; 1024];

fn response() -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nServer: ceiling\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        BODY.len()
    )
    .into_bytes();
    r.extend_from_slice(&BODY);
    r
}

async fn serve(mut stream: TcpStream, response: std::rc::Rc<Vec<u8>>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        let (res, b) = stream.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // One response per complete head; a partial head waits for more bytes.
        let mut answered = 0;
        let mut at = 0;
        while let Some(end) = buf[at..].windows(4).position(|w| w == b"\r\n\r\n") {
            at += end + 4;
            answered += 1;
        }
        buf.drain(..at);
        if answered == 0 {
            continue;
        }
        out.clear();
        for _ in 0..answered {
            out.extend_from_slice(&response);
        }
        let (res, o) = stream.write_all(out).await;
        out = o;
        if res.is_err() {
            return;
        }
    }
}

fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| "127.0.0.1:18999".parse().unwrap());
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .with_entries(1024)
        .build()
        .expect("an io_uring runtime");
    rt.block_on(async move {
        let opts = ListenerOpts::new().reuse_port(true).backlog(4096);
        let listener = TcpListener::bind_with_config(addr, &opts).expect("bind");
        let response = std::rc::Rc::new(response());
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                monoio::spawn(serve(stream, response.clone()));
            }
        }
    });
}
