//! `strait-sample`: the one program every test pod, the demo's samples and the `sample` image
//! run (`/usr/local/bin/strait-sample` in the image). Servers answer with the pod's name
//! (`POD_NAME`), so a test knows which pod a request reached; clients print one line a test
//! parses. Every network wait is bounded (5 s connect, 10 s a request or a read).
//!
//! | command | what it does |
//! |---|---|
//! | `serve PORT [DELAY_MS]` | HTTP/1.1, HTTP/2 (prior knowledge) and gRPC: `hello from POD` (after `DELAY_MS`) |
//! | `serve-echo-http PORT` | the same protocols: `pod=POD version=V host=HOST forwarded=FORWARDED` |
//! | `echo PORT` | TCP, byte for byte |
//! | `serve-tcp PORT` | TCP: reads until the peer half-closes, answers `POD: <what it read>` |
//! | `get ADDR [PATH]` | one HTTP/1.1 GET on a new connection; prints the body of a 200 |
//! | `load ADDR N [CONC] [h1\|h2\|grpc]` | `N` requests over `CONC` keep-alive connections; prints [`LoadReport`] as JSON; exits 1 if any failed |
//! | `tcp ADDR MESSAGE` | sends, half-closes, prints the answer |
//!
//! `ADDR` is `ip:port` or `name:port` (resolved through the pod's resolv.conf).

mod client;
mod grpc;
mod server;

pub use client::LoadReport;
pub use grpc::{frame as grpc_frame, unframe as grpc_unframe};

use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most requests one `load` sends, so a typo cannot start an endless run.
const MAX_REQUESTS: usize = 100_000;

const USAGE: &str = "usage: strait-sample serve PORT [DELAY_MS] | serve-echo-http PORT | \
                     echo PORT | serve-tcp PORT | get ADDR [PATH] | \
                     load ADDR N [CONC] [h1|h2|grpc] | tcp ADDR MESSAGE";

/// Runs one command (`args` without the program name); the process exit code.
pub async fn run(args: Vec<String>) -> i32 {
    match dispatch(&args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("strait-sample: {e}");
            1
        }
    }
}

/// The program's `main`: a two-thread runtime around [`run`].
pub fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => {
            eprintln!("strait-sample: {e}");
            1
        }
    };
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}

async fn dispatch(args: &[String]) -> Result<(), BoxError> {
    let Some(cmd) = args.first() else {
        return Err(USAGE.into());
    };
    let arg = |i: usize, what: &str| {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("{cmd} needs {what}\n{USAGE}"))
    };
    match cmd.as_str() {
        "serve" => {
            let delay = match args.get(2) {
                Some(ms) => Duration::from_millis(number(ms, "DELAY_MS")?),
                None => Duration::ZERO,
            };
            server::http(port(arg(1, "PORT")?)?, server::Answer::Hello { delay }).await
        }
        "serve-echo-http" => server::http(port(arg(1, "PORT")?)?, server::Answer::Echo).await,
        "echo" => server::echo(port(arg(1, "PORT")?)?).await,
        "serve-tcp" => server::named_tcp(port(arg(1, "PORT")?)?).await,
        "get" => client::get(arg(1, "ADDR")?, args.get(2).map_or("/", String::as_str)).await,
        "load" => {
            let n = number(arg(2, "N")?, "N")?.min(MAX_REQUESTS as u64) as usize;
            let conc = args.get(3).map_or(Ok(1), |c| number(c, "CONC"))?.max(1) as usize;
            let mode = args
                .get(4)
                .map_or(Ok(client::Mode::H1), |m| client::Mode::parse(m))?;
            client::load(arg(1, "ADDR")?, n, conc, mode).await
        }
        "tcp" => client::tcp(arg(1, "ADDR")?, arg(2, "MESSAGE")?).await,
        other => Err(format!("unknown command {other:?}\n{USAGE}").into()),
    }
}

fn number(s: &str, what: &str) -> Result<u64, BoxError> {
    s.parse()
        .map_err(|e| format!("{what} must be a number, not {s:?}: {e}").into())
}

fn port(s: &str) -> Result<u16, BoxError> {
    s.parse()
        .map_err(|e| format!("PORT must be 1-65535, not {s:?}: {e}").into())
}

fn pod_name() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".into())
}
