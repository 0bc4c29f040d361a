//! The guest's wall clock, stepped to the host's.
//!
//! A guest reads the wall clock once, from the VMM, early in boot; where booting is slow (an
//! emulating hypervisor) the clock is minutes behind by the time user space runs, and a
//! restored clone wakes up with its snapshot's time. The host sends its clock after each cold
//! boot (`POST /v1/clock`) and with every new identity, and the agent steps to it.
//!
//! Never under the stand-in VMM or in plain mode: there the agent runs on the host, whose clock
//! is the one being compared against, and must not be touched.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use vmsan_proto::{ClockSet, boot_env};

use crate::server::{Agent, Body, error, json, read_json};

/// A clock further off than this is stepped.
const SLACK_MS: u64 = 1000;

/// `POST /v1/clock`: step to the host's clock; answer with the guest's reading from before.
pub(crate) async fn handle(agent: Arc<Agent>, req: Request<Incoming>) -> Response<Body> {
    let host: ClockSet = match read_json(req.into_body()).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let owns_clock = agent.mode != "plain";
    match step_to(host.clock_unix_ms, owns_clock) {
        Ok(before) => json(
            StatusCode::OK,
            &ClockSet {
                clock_unix_ms: before,
            },
        ),
        Err(msg) => error(StatusCode::INTERNAL_SERVER_ERROR, "clock", &msg),
    }
}

/// The guest's clock now, in ms since the epoch.
fn now_ms() -> Result<u64, String> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
        .map_err(|e| format!("read the clock: {e}"))?;
    Ok(u64::try_from(now.tv_sec()).unwrap_or(0) * 1000
        + u64::try_from(now.tv_nsec()).unwrap_or(0) / 1_000_000)
}

/// Step the clock to `host_ms` when it is off by more than a second and this agent owns the
/// clock (a real guest); returns the reading from before.
pub(crate) fn step_to(host_ms: u64, owns_clock: bool) -> Result<u64, String> {
    let before = now_ms()?;
    let standin = std::env::var_os(boot_env::STANDIN_VSOCK_DIR).is_some();
    if !owns_clock || standin || before.abs_diff(host_ms) <= SLACK_MS {
        return Ok(before);
    }
    let secs = i64::try_from(host_ms / 1000).map_err(|e| format!("clock: {e}"))?;
    let nanos = i64::try_from((host_ms % 1000) * 1_000_000).map_err(|e| format!("clock: {e}"))?;
    nix::time::clock_settime(
        nix::time::ClockId::CLOCK_REALTIME,
        nix::sys::time::TimeSpec::new(secs, nanos),
    )
    .map_err(|e| format!("set the clock: {e}"))?;
    Ok(before)
}
