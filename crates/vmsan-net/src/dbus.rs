//! The little of D-Bus that talking to firewalld needs: a connection over a Unix socket
//! (SASL `EXTERNAL`, `Hello`) and method calls whose arguments and reply are strings.
//! Written here rather than pulled in as a dependency: a handful of calls, made once for the
//! first VM and once after the last.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{NetError, Result};

/// Where the system bus listens.
pub(crate) const SYSTEM_BUS: &str = "/run/dbus/system_bus_socket";

const METHOD_CALL: u8 = 1;
const METHOD_RETURN: u8 = 2;
const ERROR: u8 = 3;

const F_PATH: u8 = 1;
const F_INTERFACE: u8 = 2;
const F_MEMBER: u8 = 3;
const F_ERROR_NAME: u8 = 4;
const F_REPLY_SERIAL: u8 = 5;
const F_DESTINATION: u8 = 6;
const F_SIGNATURE: u8 = 8;

/// Longest wait for a reply (firewalld rebuilds rules before answering).
const TIMEOUT: Duration = Duration::from_secs(20);
/// Largest message accepted.
const MAX_MSG: usize = 1 << 20;

fn err(bus: &Path, detail: impl std::fmt::Display) -> NetError {
    NetError::sys(
        format!("D-Bus at {}", bus.display()),
        std::io::Error::other(detail.to_string()),
    )
}

fn pad(buf: &mut Vec<u8>, align: usize) {
    buf.resize(buf.len().next_multiple_of(align), 0);
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    pad(buf, 4);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_u32(buf, u32::try_from(s.len()).unwrap_or(u32::MAX));
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
}

fn put_sig(buf: &mut Vec<u8>, s: &str) {
    buf.push(u8::try_from(s.len()).unwrap_or(u8::MAX));
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
}

/// A header field holding a string-like value (`sig` is `s`, `o` or `g`) or a `u32`.
enum Field<'a> {
    Str(u8, char, &'a str),
    U32(u8, u32),
}

/// One message as sent or received: its type, serial, header fields and string arguments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Message {
    pub(crate) kind: u8,
    pub(crate) serial: u32,
    pub(crate) path: Option<String>,
    pub(crate) interface: Option<String>,
    pub(crate) member: Option<String>,
    pub(crate) error_name: Option<String>,
    pub(crate) reply_serial: Option<u32>,
    pub(crate) destination: Option<String>,
    /// The body's leading string arguments (the rest of a body is ignored).
    pub(crate) args: Vec<String>,
}

impl Message {
    /// Serialises the message (little-endian; the body is `args` as strings).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for a in &self.args {
            put_str(&mut body, a);
        }
        let sig = "s".repeat(self.args.len());
        let mut fields = Vec::new();
        let mut add = |f: Field<'_>| {
            pad(&mut fields, 8);
            match f {
                Field::Str(code, t, v) => {
                    fields.push(code);
                    put_sig(&mut fields, &t.to_string());
                    if t == 'g' {
                        put_sig(&mut fields, v);
                    } else {
                        put_str(&mut fields, v);
                    }
                }
                Field::U32(code, v) => {
                    fields.push(code);
                    put_sig(&mut fields, "u");
                    put_u32(&mut fields, v);
                }
            }
        };
        for (code, t, v) in [
            (F_PATH, 'o', &self.path),
            (F_INTERFACE, 's', &self.interface),
            (F_MEMBER, 's', &self.member),
            (F_ERROR_NAME, 's', &self.error_name),
            (F_DESTINATION, 's', &self.destination),
        ] {
            if let Some(v) = v {
                add(Field::Str(code, t, v));
            }
        }
        if let Some(r) = self.reply_serial {
            add(Field::U32(F_REPLY_SERIAL, r));
        }
        if !sig.is_empty() {
            add(Field::Str(F_SIGNATURE, 'g', &sig));
        }
        let mut out = vec![b'l', self.kind, 0, 1];
        out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&self.serial.to_le_bytes());
        out.extend_from_slice(
            &u32::try_from(fields.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        out.extend_from_slice(&fields);
        pad(&mut out, 8);
        out.extend_from_slice(&body);
        out
    }

    /// Reads one message from `r`.
    pub(crate) fn read_from(r: &mut impl std::io::Read) -> std::io::Result<Self> {
        let bad = |d: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, d.to_string());
        let mut fixed = [0u8; 16];
        r.read_exact(&mut fixed)?;
        if fixed[0] != b'l' {
            return Err(bad("big-endian D-Bus messages are not supported"));
        }
        let u = |i: usize| u32::from_le_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
        let (body_len, serial, fields_len) = (u(4) as usize, u(8), u(12) as usize);
        let rest = (16 + fields_len).next_multiple_of(8) - 16 + body_len;
        if rest > MAX_MSG {
            return Err(bad("D-Bus message too large"));
        }
        let mut b = vec![0u8; 16 + rest];
        b[..16].copy_from_slice(&fixed);
        r.read_exact(&mut b[16..])?;
        let mut m = Self {
            kind: fixed[1],
            serial,
            ..Self::default()
        };
        let mut p = Parser { b: &b, at: 16 };
        let end = 16 + fields_len;
        let mut sig = String::new();
        while p.at < end {
            p.align(8);
            if p.at >= end {
                break;
            }
            let code = p.byte()?;
            let t = p.sig()?;
            match t.as_str() {
                "s" | "o" => {
                    let v = p.string()?;
                    match code {
                        F_PATH => m.path = Some(v),
                        F_INTERFACE => m.interface = Some(v),
                        F_MEMBER => m.member = Some(v),
                        F_ERROR_NAME => m.error_name = Some(v),
                        F_DESTINATION => m.destination = Some(v),
                        _ => {}
                    }
                }
                "g" => {
                    let v = p.sig()?;
                    if code == F_SIGNATURE {
                        sig = v;
                    }
                }
                "u" => {
                    let v = p.u32()?;
                    if code == F_REPLY_SERIAL {
                        m.reply_serial = Some(v);
                    }
                }
                _ => return Err(bad("unsupported D-Bus header field type")),
            }
        }
        p.at = end.next_multiple_of(8);
        for c in sig.chars() {
            if c != 's' {
                break;
            }
            m.args.push(p.string()?);
        }
        Ok(m)
    }
}

struct Parser<'a> {
    b: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn short() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "truncated D-Bus message")
    }
    fn align(&mut self, n: usize) {
        self.at = self.at.next_multiple_of(n);
    }
    fn byte(&mut self) -> std::io::Result<u8> {
        let v = *self.b.get(self.at).ok_or_else(Self::short)?;
        self.at += 1;
        Ok(v)
    }
    fn u32(&mut self) -> std::io::Result<u32> {
        self.align(4);
        let s = self.b.get(self.at..self.at + 4).ok_or_else(Self::short)?;
        self.at += 4;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn text(&mut self, len: usize) -> std::io::Result<String> {
        let s = self.b.get(self.at..self.at + len).ok_or_else(Self::short)?;
        self.at += len + 1; // and the NUL
        Ok(String::from_utf8_lossy(s).into_owned())
    }
    fn string(&mut self) -> std::io::Result<String> {
        let len = self.u32()? as usize;
        self.text(len)
    }
    fn sig(&mut self) -> std::io::Result<String> {
        let len = usize::from(self.byte()?);
        self.text(len)
    }
}

/// A D-Bus error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallError {
    /// e.g. `org.fedoraproject.FirewallD1.Exception`
    pub(crate) name: String,
    /// its message, e.g. `ZONE_ALREADY_SET: vmsan-h+`
    pub(crate) message: String,
}

/// A connection to a bus.
pub(crate) struct Connection {
    stream: BufReader<UnixStream>,
    bus: PathBuf,
    serial: u32,
}

impl Connection {
    /// Connects to the bus listening at `bus` and says hello.
    pub(crate) fn open(bus: &Path) -> Result<Self> {
        let stream = UnixStream::connect(bus).map_err(|e| err(bus, format!("connect: {e}")))?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .map_err(|e| err(bus, e))?;
        let mut c = Self {
            stream: BufReader::new(stream),
            bus: bus.to_path_buf(),
            serial: 0,
        };
        c.auth()?;
        c.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "Hello",
            &[],
        )?
        .map_err(|e| err(bus, format!("Hello: {}: {}", e.name, e.message)))?;
        Ok(c)
    }

    fn auth(&mut self) -> Result<()> {
        let uid = nix::unistd::geteuid().as_raw().to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        let w = self.stream.get_mut();
        w.write_all(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())
            .map_err(|e| err(&self.bus, format!("authenticate: {e}")))?;
        let mut line = String::new();
        self.stream
            .read_line(&mut line)
            .map_err(|e| err(&self.bus, format!("authenticate: {e}")))?;
        if !line.starts_with("OK ") {
            return Err(err(
                &self.bus,
                format!("authentication refused: {}", line.trim()),
            ));
        }
        self.stream
            .get_mut()
            .write_all(b"BEGIN\r\n")
            .map_err(|e| err(&self.bus, format!("authenticate: {e}")))
    }

    /// Calls `member` with string arguments; returns the reply's string arguments, or the
    /// error the callee answered with.
    pub(crate) fn call(
        &mut self,
        destination: &str,
        path: &str,
        interface: &str,
        member: &str,
        args: &[&str],
    ) -> Result<std::result::Result<Vec<String>, CallError>> {
        self.serial = self.serial.wrapping_add(1).max(1);
        let m = Message {
            kind: METHOD_CALL,
            serial: self.serial,
            path: Some(path.to_string()),
            interface: Some(interface.to_string()),
            member: Some(member.to_string()),
            destination: Some(destination.to_string()),
            args: args.iter().map(|a| (*a).to_string()).collect(),
            ..Message::default()
        };
        self.stream
            .get_mut()
            .write_all(&m.encode())
            .map_err(|e| err(&self.bus, format!("{member}: send: {e}")))?;
        loop {
            let r = Message::read_from(&mut self.stream)
                .map_err(|e| err(&self.bus, format!("{member}: receive: {e}")))?;
            if r.reply_serial != Some(m.serial) {
                continue; // a signal (NameAcquired) or something else not ours
            }
            return Ok(match r.kind {
                METHOD_RETURN => Ok(r.args),
                ERROR => Err(CallError {
                    name: r.error_name.unwrap_or_default(),
                    message: r.args.into_iter().next().unwrap_or_default(),
                }),
                k => Err(CallError {
                    name: format!("unexpected message type {k}"),
                    message: String::new(),
                }),
            });
        }
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A stand-in bus with one service, for unit tests: it authenticates like a bus daemon,
    //! answers `Hello`, records every other call and answers it through `answer`.

    use super::*;
    use std::io::Read as _;
    use std::os::unix::net::UnixListener;
    use std::sync::{Arc, Mutex};

    /// A reply: string arguments, or (error name, message).
    pub(crate) type Reply = std::result::Result<Vec<String>, (String, String)>;

    /// (member, args)
    pub(crate) type Calls = Arc<Mutex<Vec<(String, Vec<String>)>>>;

    /// Serves connections at `path` until the listener is dropped with the process.
    pub(crate) fn serve(
        path: &Path,
        answer: impl Fn(&str, &[String]) -> Reply + Send + Sync + 'static,
    ) -> Calls {
        let l = UnixListener::bind(path).expect("bind fake bus");
        let calls: Calls = Arc::default();
        let c2 = calls.clone();
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { return };
                let calls = c2.clone();
                let answer = answer.clone();
                std::thread::spawn(move || {
                    let _ = conn(s, &calls, &*answer);
                });
            }
        });
        calls
    }

    fn conn(
        s: UnixStream,
        calls: &Calls,
        answer: &dyn Fn(&str, &[String]) -> Reply,
    ) -> std::io::Result<()> {
        let mut r = BufReader::new(s.try_clone()?);
        let mut w = s;
        let mut nul = [0u8; 1];
        r.read_exact(&mut nul)?;
        let mut line = String::new();
        r.read_line(&mut line)?;
        assert!(line.starts_with("AUTH EXTERNAL "), "{line}");
        w.write_all(b"OK 0123456789abcdef0123456789abcdef\r\n")?;
        line.clear();
        r.read_line(&mut line)?;
        assert_eq!(line, "BEGIN\r\n");
        let mut serial = 100;
        loop {
            let m = Message::read_from(&mut r)?;
            let member = m.member.clone().unwrap_or_default();
            serial += 1;
            let reply = if member == "Hello" {
                // A signal first, as a bus daemon sends NameAcquired.
                let sig = Message {
                    kind: 4,
                    serial,
                    path: Some("/org/freedesktop/DBus".into()),
                    interface: Some("org.freedesktop.DBus".into()),
                    member: Some("NameAcquired".into()),
                    args: vec![":1.7".into()],
                    ..Message::default()
                };
                w.write_all(&sig.encode())?;
                serial += 1;
                Ok(vec![":1.7".to_string()])
            } else {
                calls
                    .lock()
                    .expect("calls")
                    .push((member.clone(), m.args.clone()));
                answer(&member, &m.args)
            };
            let out = match reply {
                Ok(args) => Message {
                    kind: METHOD_RETURN,
                    serial,
                    reply_serial: Some(m.serial),
                    args,
                    ..Message::default()
                },
                Err((name, msg)) => Message {
                    kind: ERROR,
                    serial,
                    reply_serial: Some(m.serial),
                    error_name: Some(name),
                    args: vec![msg],
                    ..Message::default()
                },
            };
            w.write_all(&out.encode())?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let m = Message {
            kind: METHOD_CALL,
            serial: 9,
            path: Some("/org/fedoraproject/FirewallD1".into()),
            interface: Some("org.fedoraproject.FirewallD1.zone".into()),
            member: Some("addInterface".into()),
            destination: Some("org.fedoraproject.FirewallD1".into()),
            args: vec!["trusted".into(), "vmsan-h+".into()],
            ..Message::default()
        };
        let b = m.encode();
        let back = Message::read_from(&mut &b[..]).expect("parse");
        assert_eq!(back, m);
        let e = Message {
            kind: ERROR,
            serial: 3,
            reply_serial: Some(9),
            error_name: Some("org.fedoraproject.FirewallD1.Exception".into()),
            args: vec!["ZONE_ALREADY_SET: vmsan-h+".into()],
            ..Message::default()
        };
        assert_eq!(Message::read_from(&mut &e.encode()[..]).expect("parse"), e);
    }

    #[test]
    fn calls_over_a_bus() {
        let dir = std::env::temp_dir().join(format!("vmsan-dbus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("bus");
        let _ = std::fs::remove_file(&path);
        let calls = fake::serve(&path, |m, a| match m {
            "echo" => Ok(a.to_vec()),
            _ => Err(("org.example.Error".into(), format!("no {m}"))),
        });
        let mut c = Connection::open(&path).expect("connect");
        assert_eq!(
            c.call("d", "/p", "i", "echo", &["a", "bc"]).expect("call"),
            Ok(vec!["a".to_string(), "bc".to_string()])
        );
        assert_eq!(
            c.call("d", "/p", "i", "nope", &[]).expect("call"),
            Err(CallError {
                name: "org.example.Error".into(),
                message: "no nope".into()
            })
        );
        assert_eq!(calls.lock().expect("calls").len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The real bus daemon, when installed: authentication, `Hello`, a call with a string
    /// argument and reply, and an error reply, as `dbus-daemon` speaks them.
    #[test]
    fn a_real_dbus_daemon_understands_us() {
        let Ok(found) = std::process::Command::new("dbus-daemon")
            .arg("--version")
            .output()
        else {
            vmsan_testkit::skip!("no dbus-daemon");
            return;
        };
        assert!(found.status.success());
        let dir = std::env::temp_dir().join(format!("vmsan-dbusd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("bus");
        let conf = dir.join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                "<busconfig><type>session</type><listen>unix:path={}</listen>\
                 <auth>EXTERNAL</auth><policy context=\"default\">\
                 <allow send_destination=\"*\" eavesdrop=\"true\"/><allow eavesdrop=\"true\"/>\
                 <allow own=\"*\"/></policy></busconfig>",
                path.display()
            ),
        )
        .expect("write bus config");
        struct Daemon(std::process::Child, PathBuf);
        impl Drop for Daemon {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
                let _ = std::fs::remove_dir_all(&self.1);
            }
        }
        let mut child = std::process::Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start dbus-daemon");
        // The daemon prints its address once it listens: wait for that line.
        let out = child.stdout.take().expect("stdout");
        let _d = Daemon(child, dir.clone());
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("address");
        assert!(line.contains("unix:path="), "{line}");
        let mut c = Connection::open(&path).expect("connect to dbus-daemon");
        let owner = c
            .call(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "GetNameOwner",
                &["org.freedesktop.DBus"],
            )
            .expect("call");
        assert_eq!(owner, Ok(vec!["org.freedesktop.DBus".to_string()]));
        // No firewalld on this bus: the daemon answers for it.
        let e = crate::firewalld::bound_zone(&path).expect_err("no firewalld");
        assert!(e.to_string().contains("ServiceUnknown"), "{e}");
    }
}
