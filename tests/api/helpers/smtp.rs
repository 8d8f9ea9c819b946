//! A real SMTP server on loopback for the email tests: it speaks enough SMTP for a client
//! (greeting, EHLO/HELO, MAIL FROM, RCPT TO, DATA with dot-termination, RSET, NOOP, QUIT), keeps
//! every message it accepts, can refuse chosen recipients with a 4xx or 5xx reply, and can be
//! stopped and started again on the same port to play an outage.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a test waits for mail that should arrive.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(15);

/// A message as the server received it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The DATA, dot-unstuffed, CRLF line ends.
    pub data: String,
}

#[derive(Default)]
struct Shared {
    messages: Mutex<Vec<Mail>>,
    /// Recipient (lowercase) → the reply its RCPT TO gets.
    refusals: Mutex<Vec<(String, String)>>,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

pub struct SmtpSink {
    pub port: u16,
    shared: Arc<Shared>,
    count: watch::Sender<usize>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sink = SmtpSink {
            port,
            shared: Arc::new(Shared::default()),
            count: watch::channel(0).0,
            server: Mutex::new(None),
        };
        sink.serve(listener);
        sink
    }

    /// `smtp://127.0.0.1:PORT`, for `smtp_url`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Closes the port and every open connection: clients now get "connection refused".
    pub fn stop(&self) {
        if let Some(server) = self.server.lock().unwrap().take() {
            server.abort();
        }
        for connection in self.shared.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        self.stop();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot listen on port {} again: {e}", self.port),
            }
        };
        self.serve(listener);
    }

    /// From now on, RCPT TO this address gets `reply` (e.g. "450 4.2.1 Mailbox busy").
    pub fn refuse(&self, recipient: &str, reply: &str) {
        self.shared
            .refusals
            .lock()
            .unwrap()
            .push((recipient.to_ascii_lowercase(), reply.to_owned()));
    }

    /// Every message accepted so far.
    pub fn messages(&self) -> Vec<Mail> {
        self.shared.messages.lock().unwrap().clone()
    }

    /// Waits until `n` messages in all have arrived and returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Mail> {
        let mut rx = self.count.subscribe();
        let arrived = tokio::time::timeout(ARRIVAL_TIMEOUT, rx.wait_for(|c| *c >= n)).await;
        assert!(
            matches!(arrived, Ok(Ok(_))),
            "expected {n} messages, got {}: {:#?}",
            self.messages().len(),
            self.messages()
        );
        self.messages()
    }

    /// Waits for the `n`-th message (1-based) and returns it.
    pub async fn nth(&self, n: usize) -> Mail {
        self.wait_for(n).await.swap_remove(n - 1)
    }

    fn serve(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let count = self.count.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let connection = tokio::spawn(converse(stream, shared.clone(), count.clone()));
                shared.connections.lock().unwrap().push(connection);
            }
        });
        *self.server.lock().unwrap() = Some(server);
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One SMTP session.
async fn converse(stream: TcpStream, shared: Arc<Shared>, count: watch::Sender<usize>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    if !reply(&mut write, "220 sink.test ESMTP test sink").await {
        return;
    }
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match read.read_until(b'\n', &mut raw).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
        let verb = line
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let answer = match verb.as_str() {
            "EHLO" => "250-sink.test greets you\r\n250 HELP".to_owned(),
            "HELO" => "250 sink.test".to_owned(),
            "MAIL" => {
                from = Some(address(&line));
                to.clear();
                "250 2.1.0 OK".to_owned()
            }
            "RCPT" if from.is_none() => "503 5.5.1 MAIL first".to_owned(),
            "RCPT" => {
                let rcpt = address(&line);
                let refusal = shared
                    .refusals
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(who, _)| *who == rcpt.to_ascii_lowercase())
                    .map(|(_, reply)| reply.clone());
                match refusal {
                    Some(reply) => reply,
                    None => {
                        to.push(rcpt);
                        "250 2.1.5 OK".to_owned()
                    }
                }
            }
            "DATA" if to.is_empty() => "503 5.5.1 RCPT first".to_owned(),
            "DATA" => {
                if !reply(&mut write, "354 End data with <CR><LF>.<CR><LF>").await {
                    return;
                }
                let Some(data) = read_data(&mut read).await else {
                    return;
                };
                let mail = Mail {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data,
                };
                let total = {
                    let mut messages = shared.messages.lock().unwrap();
                    messages.push(mail);
                    messages.len()
                };
                count.send_replace(total);
                "250 2.0.0 OK queued".to_owned()
            }
            "RSET" => {
                from = None;
                to.clear();
                "250 2.0.0 OK".to_owned()
            }
            "NOOP" => "250 2.0.0 OK".to_owned(),
            "QUIT" => {
                let _ = reply(&mut write, "221 2.0.0 Bye").await;
                return;
            }
            _ => "500 5.5.2 Command not recognized".to_owned(),
        };
        if !reply(&mut write, &answer).await {
            return;
        }
    }
}

/// Writes one reply; false when the client is gone.
async fn reply(w: &mut tokio::net::tcp::OwnedWriteHalf, text: &str) -> bool {
    w.write_all(format!("{text}\r\n").as_bytes()).await.is_ok()
}

/// The lines up to the lone ".", dot-unstuffed.
async fn read_data(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<String> {
    let mut data = String::new();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if read.read_until(b'\n', &mut raw).await.ok()? == 0 {
            return None;
        }
        let line = String::from_utf8_lossy(&raw).into_owned();
        if line == ".\r\n" || line == ".\n" {
            return Some(data);
        }
        data.push_str(line.strip_prefix('.').unwrap_or(&line));
    }
}

/// `MAIL FROM:<a@b> SIZE=1` → `a@b`.
fn address(line: &str) -> String {
    let start = line.find('<').map_or(0, |i| i + 1);
    let end = line[start..].find('>').map_or(line.len(), |i| start + i);
    line[start..end].to_owned()
}

impl Mail {
    /// A top-level header, unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        header_of(self.head(), name)
    }

    fn head(&self) -> &str {
        self.data.split("\r\n\r\n").next().unwrap_or("")
    }

    /// The decoded body of the part of this content type (`text/plain`, `text/html`), LF line
    /// ends.
    pub fn body(&self, content_type: &str) -> String {
        let top = self.header("Content-Type").unwrap_or_default();
        let boundary = top
            .split(';')
            .find_map(|p| p.trim().strip_prefix("boundary="))
            .map(|b| b.trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("not multipart: {top}"));
        let (_, body) = self.data.split_once("\r\n\r\n").unwrap();
        for part in body.split(&format!("--{boundary}")) {
            let Some((head, content)) = part.split_once("\r\n\r\n") else {
                continue;
            };
            let part_type = header_of(head, "Content-Type").unwrap_or_default();
            if !part_type.starts_with(content_type) {
                continue;
            }
            let encoding = header_of(head, "Content-Transfer-Encoding")
                .unwrap_or_default()
                .to_ascii_lowercase();
            let content = content.strip_suffix("\r\n").unwrap_or(content);
            let decoded = match encoding.as_str() {
                "quoted-printable" => quoted_printable(content),
                "base64" => {
                    let compact: String = content.chars().filter(|c| !c.is_whitespace()).collect();
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(compact)
                        .unwrap();
                    String::from_utf8(bytes).unwrap()
                }
                _ => content.to_owned(),
            };
            return decoded.replace("\r\n", "\n");
        }
        panic!("no {content_type} part in {}", self.data)
    }

    /// The one-time link to `path` (e.g. `/password/reset`) in the plain-text body.
    pub fn link(&self, path: &str) -> String {
        let text = self.body("text/plain");
        text.split_whitespace()
            .find(|w| w.contains(&format!("{path}?token=")))
            .unwrap_or_else(|| panic!("no {path} link in:\n{text}"))
            .to_owned()
    }

    /// The token of the link to `path`.
    pub fn token(&self, path: &str) -> String {
        let link = self.link(path);
        link.split_once("?token=").unwrap().1.to_owned()
    }
}

fn header_of(head: &str, name: &str) -> Option<String> {
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

fn quoted_printable(s: &str) -> String {
    let s = s.replace("=\r\n", "");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

use super::{Db, TestApp};
use latchkey::config::Overrides;
use latchkey::mail::worker::{self, Pass};

impl TestApp {
    /// A server whose emails go to `sink`, without the mail throttle unless `configure` sets one.
    pub async fn spawn_with_sink(
        db: Db,
        sink: &SmtpSink,
        configure: impl FnOnce(&mut Overrides),
    ) -> TestApp {
        let url = sink.url();
        TestApp::spawn_with(db, move |o| {
            o.smtp_url = Some(url);
            o.mail_throttle = Some(0);
            configure(o);
        })
        .await
    }

    /// One pass over the outbox now, as the worker makes.
    pub async fn deliver(&self) -> Pass {
        worker::deliver_due(&self.state).await.expect("outbox pass")
    }

    /// Waits until the single integer `sql` returns is `expected` (the worker runs on its own).
    pub async fn wait_for_count(&self, sql: &str, expected: i64) {
        let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
        loop {
            let got = self.count(sql).await;
            if got == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{sql}: still {got}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
