//! `standin-guest-util`: the Unix-socket side of the stand-in's vsock emulation, for busybox
//! test guests (busybox `nc` has no Unix sockets).
//!
//! - `listen <socket> <prefix>`: bind, accept one connection, read one line, answer
//!   `<prefix> <line>`, exit.
//! - `connect <host.sock> <port> <message>`: `CONNECT <port>`, expect `OK <port>`, send the
//!   message line, print the reply line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};

fn run(args: &[String]) -> Result<(), String> {
    match args {
        [cmd, sock, prefix] if cmd == "listen" => {
            let _ = std::fs::remove_file(sock);
            let l = UnixListener::bind(sock).map_err(|e| format!("bind {sock}: {e}"))?;
            println!("standin-guest-util: listening on {sock}");
            let (c, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
            let mut r = BufReader::new(c.try_clone().map_err(|e| e.to_string())?);
            let mut line = String::new();
            r.read_line(&mut line).map_err(|e| e.to_string())?;
            let mut c = c;
            c.write_all(format!("{prefix} {line}").as_bytes()).map_err(|e| e.to_string())?;
            Ok(())
        }
        [cmd, sock, port, msg] if cmd == "connect" => {
            let mut c = UnixStream::connect(sock).map_err(|e| format!("connect {sock}: {e}"))?;
            c.write_all(format!("CONNECT {port}\n").as_bytes()).map_err(|e| e.to_string())?;
            let mut r = BufReader::new(c.try_clone().map_err(|e| e.to_string())?);
            let mut ok = String::new();
            r.read_line(&mut ok).map_err(|e| e.to_string())?;
            if ok != format!("OK {port}\n") {
                return Err(format!("expected OK {port}, got {ok:?}"));
            }
            c.write_all(format!("{msg}\n").as_bytes()).map_err(|e| e.to_string())?;
            let mut reply = String::new();
            r.read_line(&mut reply).map_err(|e| e.to_string())?;
            print!("guest got: {reply}");
            Ok(())
        }
        _ => Err("usage: standin-guest-util listen <socket> <prefix> | connect <host.sock> <port> <message>".into()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("standin-guest-util: {e}");
        std::process::exit(1);
    }
}
