//! Published ports: `--publish-port host:guest[/tcp|udp]`.

use std::collections::HashMap;

use super::{invalid, split_list};
use crate::error::{Error, ErrorCode};

/// The TCP port the Node.js vmsan's guest agent listened on, over plain HTTP on every
/// address, where `--publish-port 9119` could expose it. vmsan's agent listens on vsock only,
/// but the port stays reserved on both sides so that no published port can ever reach an
/// agent listening on TCP, and old scripts fail loudly.
pub const AGENT_PORT: u16 = 9119;

/// Transport protocol of a published port (the network layer's type).
pub use vmsan_net::Protocol;

/// One published port (the network layer's type, as the VM's record keeps it).
pub use vmsan_net::PublishedPort;

const FLAG: &str = "--publish-port";
const RULE: &str = "Use PORT, HOST:GUEST or either with /tcp or /udp (e.g. 8080, 8080:80, \
                    5353:53/udp); ports are 1-65535.";

fn port_number(raw_entry: &str, s: &str) -> Result<u16, Error> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(ErrorCode::ValidationPort, FLAG, raw_entry, RULE));
    }
    match s.parse::<u32>() {
        Ok(n @ 1..=65_535) => Ok(u16::try_from(n).unwrap_or(u16::MAX)),
        _ => Err(invalid(ErrorCode::ValidationPort, FLAG, raw_entry, RULE)),
    }
}

/// Parse one entry: `P` (= `P:P/tcp`), `P/udp`, `H:G`, `H:G/tcp`, `H:G/udp`.
pub fn parse_port_mapping(raw: &str) -> Result<PublishedPort, Error> {
    let (ports, protocol) = match raw.split_once('/') {
        None => (raw, Protocol::Tcp),
        Some((p, proto)) => match proto.to_ascii_lowercase().as_str() {
            "tcp" => (p, Protocol::Tcp),
            "udp" => (p, Protocol::Udp),
            _ => return Err(invalid(ErrorCode::ValidationPort, FLAG, raw, RULE)),
        },
    };
    let (host, guest) = match ports.split_once(':') {
        None => {
            let p = port_number(raw, ports)?;
            (p, p)
        }
        Some((h, g)) => (port_number(raw, h)?, port_number(raw, g)?),
    };
    for p in [host, guest] {
        if p == AGENT_PORT {
            return Err(Error::new(
                ErrorCode::ValidationPort,
                format!("Invalid {FLAG}: {p} (reserved for vmsan internal use)"),
            )
            .why(format!(
                "Port {AGENT_PORT} is reserved for the vmsan guest agent."
            ))
            .fix("Publish another port.")
            .detail("flag", FLAG)
            .detail("value", raw)
            .detail("port", p));
        }
    }
    Ok(PublishedPort {
        host_port: host,
        guest_port: guest,
        protocol,
    })
}

/// Parse every `--publish-port` value (repeatable, comma lists). The same host port and
/// protocol given twice is a conflict (`ERR_VALIDATION_PORT_CONFLICT`); conflicts with other
/// VMs are checked by the lifecycle code, which knows them.
pub fn parse_publish_ports(values: &[String]) -> Result<Vec<PublishedPort>, Error> {
    let mut out: Vec<PublishedPort> = Vec::new();
    let mut seen: HashMap<(u16, Protocol), PublishedPort> = HashMap::new();
    for entry in split_list(ErrorCode::ValidationPort, FLAG, values)? {
        let m = parse_port_mapping(&entry)?;
        if let Some(prev) = seen.insert((m.host_port, m.protocol), m) {
            return Err(Error::new(
                ErrorCode::ValidationPortConflict,
                format!(
                    "Published port conflict: host port {}/{} is given twice ({prev} and {m})",
                    m.host_port, m.protocol
                ),
            )
            .detail("flag", FLAG)
            .detail("port", m.host_port));
        }
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(h: u16, g: u16, p: Protocol) -> PublishedPort {
        PublishedPort {
            host_port: h,
            guest_port: g,
            protocol: p,
        }
    }

    #[test]
    fn accepted() {
        assert_eq!(
            parse_port_mapping("8080").unwrap(),
            pm(8080, 8080, Protocol::Tcp)
        );
        assert_eq!(
            parse_port_mapping("8080:80").unwrap(),
            pm(8080, 80, Protocol::Tcp)
        );
        assert_eq!(
            parse_port_mapping("8080:80/tcp").unwrap(),
            pm(8080, 80, Protocol::Tcp)
        );
        assert_eq!(
            parse_port_mapping("5353:53/udp").unwrap(),
            pm(5353, 53, Protocol::Udp)
        );
        assert_eq!(
            parse_port_mapping("53/UDP").unwrap(),
            pm(53, 53, Protocol::Udp)
        );
        assert_eq!(
            parse_port_mapping("1:65535").unwrap(),
            pm(1, 65_535, Protocol::Tcp)
        );
        let all = parse_publish_ports(&["80,443".into(), "53/udp".into(), "53".into()]).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[2], pm(53, 53, Protocol::Udp));
        assert_eq!(pm(1, 2, Protocol::Udp).to_string(), "1:2/udp");
    }

    #[test]
    fn rejected() {
        for bad in [
            "0",
            "65536",
            "abc",
            "80:",
            ":80",
            "80/sctp",
            "1:2:3",
            "80/",
            "-1",
            "80 ",
            "8080:0",
            "999999",
            "80/tcp/udp",
            "9119",
            "9119:80",
            "80:9119/udp",
        ] {
            let e = parse_port_mapping(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationPort, "{bad}");
            assert_eq!(e.details()["flag"], "--publish-port");
        }
        assert!(
            parse_port_mapping("9119")
                .unwrap_err()
                .message()
                .contains("reserved")
        );
        for bad in ["80,", "80,,81", ""] {
            assert_eq!(
                parse_publish_ports(&[bad.into()]).unwrap_err().code(),
                ErrorCode::ValidationPort
            );
        }
    }

    #[test]
    fn duplicates_conflict() {
        let e = parse_publish_ports(&["8080:80".into(), "8080:81".into()]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ValidationPortConflict);
        // Same number, different protocol: fine.
        assert_eq!(parse_publish_ports(&["53,53/udp".into()]).unwrap().len(), 2);
    }
}
