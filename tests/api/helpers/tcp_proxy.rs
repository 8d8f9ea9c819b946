//! A TCP proxy between the server and PostgreSQL, to make outages without touching the machine's
//! PostgreSQL: `Forward` copies bytes both ways; `BlackHole` accepts new connections and forwards
//! nothing on any connection (a route that drops packets: no RST, nothing acknowledged, so the
//! client's kernel would retransmit for a quarter of an hour); `Reset` closes every connection,
//! open or new, at once. Back to `Forward`, frozen connections carry on where they stopped.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    BlackHole,
    Reset,
}

pub struct TcpProxy {
    pub address: SocketAddr,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// A proxy on 127.0.0.1:0 to `upstream`, forwarding.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (mode, watching) = watch::channel(Mode::Forward);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = watching.clone();
                tokio::spawn(async move {
                    if *mode.borrow() == Mode::Reset {
                        return; // Accepted and dropped: the client sees its connection closed.
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        () = pipe(client_read, server_write, mode.clone()) => {}
                        () = pipe(server_read, client_write, mode) => {}
                    }
                });
            }
        });
        TcpProxy {
            address,
            mode,
            task,
        }
    }

    /// A proxy to the tests' PostgreSQL server, forwarding.
    pub async fn to_postgres() -> TcpProxy {
        let url = url::Url::parse(&super::admin_url()).unwrap();
        let host = url.host_str().unwrap_or("127.0.0.1");
        let port = url.port().unwrap_or(5432);
        let upstream = format!("{host}:{port}")
            .parse()
            .expect("PostgreSQL at an IP address");
        TcpProxy::start(upstream).await
    }

    /// `url` (a test database's) with the proxy's address in place of the server's.
    pub fn url_through(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).unwrap();
        url.set_host(Some(&self.address.ip().to_string())).unwrap();
        url.set_port(Some(self.address.port())).unwrap();
        url.to_string()
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` while the mode allows: a chunk read during a black hole waits for the
/// hole to end; a reset ends the copy (and with it both halves of the connection).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.wait_for(|m| *m == Mode::Reset) => {
                let _ = changed;
                return;
            }
        };
        match mode.wait_for(|m| *m != Mode::BlackHole).await.map(|m| *m) {
            Ok(Mode::Forward) => {}
            _ => return,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
