//! Timing of the steps of a create, start, restore or snapshot, as `--verbose` and `--json`
//! show them. The names are one enum so that a step looked up later (the caller subtracts the
//! spawn from the supervisor's start-up) is the same step that was recorded.

/// One step of a boot and how long it took.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Step {
    /// What was done ([`StepName::as_str`], or a name sent by an older supervisor).
    pub name: String,
    /// Milliseconds.
    pub ms: f64,
    /// Whether it ran alongside other steps (so it is not part of the sum that makes the
    /// total).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parallel: bool,
}

/// The steps that are timed. Their texts are shown to users and are part of the `--json`
/// output, so they do not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepName {
    // The caller's side of create/start/restore: once per request, then per VM.
    ResolveImage,
    ResolveSnapshot,
    Record,
    SupervisorSpawn,
    SupervisorProcessStart,
    Disk,
    ConfigDrive,
    // The supervisor's boot.
    RecordedAsRunning,
    SupervisorRuntime,
    NetworkNamespace,
    Network,
    WaitNetworkDnsFilter,
    WaitDiskCgroups,
    LeaveCallerCgroups,
    Jail,
    WaitNetworkNamespace,
    VmmStart,
    ApiSocket,
    Configure,
    InstanceStart,
    AgentReady,
    AgentAnswers,
    // A restore's load (in the supervisor).
    SnapshotLoad,
    RestoredAgentAnswers,
    NewIdentity,
    // A snapshot.
    GuestSync,
    Pause,
    FirecrackerSnapshot,
    DiskCopy,
    Resume,
    DiffMerge,
    Publish,
}

impl StepName {
    /// The text shown for this step.
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::ResolveImage => "kernel, agent and image",
            StepName::ResolveSnapshot => "snapshot check, kernel and agent",
            StepName::Record => "record (id, slot, state)",
            StepName::SupervisorSpawn => "supervisor spawn",
            StepName::SupervisorProcessStart => "supervisor process start",
            StepName::Disk => "disk",
            StepName::ConfigDrive => "config drive",
            StepName::RecordedAsRunning => "recorded as running",
            StepName::SupervisorRuntime => "supervisor runtime",
            StepName::NetworkNamespace => "network namespace",
            StepName::Network => "network",
            StepName::WaitNetworkDnsFilter => "waiting for the network, DNS filter",
            StepName::WaitDiskCgroups => {
                "waiting for the disk, the VM's cgroups and leaving the caller's"
            }
            StepName::LeaveCallerCgroups => "leaving the caller's cgroups",
            StepName::Jail => "jail",
            StepName::WaitNetworkNamespace => "waiting for the network namespace",
            StepName::VmmStart => "jailer and Firecracker start",
            StepName::ApiSocket => "API socket",
            StepName::Configure => "configure (API)",
            StepName::InstanceStart => "InstanceStart",
            StepName::AgentReady => "agent ready",
            StepName::AgentAnswers => "agent answers the host, clock set",
            StepName::SnapshotLoad => "snapshot load",
            StepName::RestoredAgentAnswers => "restored agent answers",
            StepName::NewIdentity => "new identity",
            StepName::GuestSync => "guest sync",
            StepName::Pause => "pause",
            StepName::FirecrackerSnapshot => "Firecracker snapshot",
            StepName::DiskCopy => "disk copy",
            StepName::Resume => "resume",
            StepName::DiffMerge => "diff merge",
            StepName::Publish => "publish",
        }
    }
}

/// Times consecutive steps.
#[derive(Debug, Clone)]
pub(crate) struct Stopwatch {
    last: std::time::Instant,
    pub(crate) steps: Vec<Step>,
}

impl Stopwatch {
    pub(crate) fn start() -> Self {
        Self {
            last: std::time::Instant::now(),
            steps: Vec::new(),
        }
    }

    /// Record the time since the previous lap (or the start) as step `name`.
    pub(crate) fn lap(&mut self, name: StepName) {
        let now = std::time::Instant::now();
        self.push(name, (now - self.last).as_secs_f64() * 1000.0, false);
        self.last = now;
    }

    /// Record a step timed elsewhere, and restart the lap clock.
    pub(crate) fn add(&mut self, name: StepName, ms: f64) {
        self.push(name, ms, false);
        self.last = std::time::Instant::now();
    }

    /// Record a step that ran alongside others (not part of the sum; the lap clock runs on).
    pub(crate) fn add_parallel(&mut self, name: StepName, ms: f64) {
        self.push(name, ms, true);
    }

    /// How long step `name` took, if it was recorded.
    pub(crate) fn took(&self, name: StepName) -> Option<f64> {
        self.steps
            .iter()
            .find(|s| s.name == name.as_str())
            .map(|s| s.ms)
    }

    fn push(&mut self, name: StepName, ms: f64, parallel: bool) {
        self.steps.push(Step {
            name: name.as_str().into(),
            ms,
            parallel,
        });
    }
}
