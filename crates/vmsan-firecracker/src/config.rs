//! A whole pre-boot configuration, applied in the order the real Firecracker v1.16.1 accepted
//! for a cold boot (the `privileged_realfc_*` tests drive that binary through it), with the
//! time each request took.

use std::time::{Duration, Instant};

use crate::client::{ClientError, FirecrackerClient};
use crate::cpu_template::CustomCpuTemplate;
use crate::models::{
    BootSource, Drive, EntropyDevice, Logger, MachineConfiguration, Metrics, NetworkInterface,
    SerialDevice, Vsock,
};

/// Everything configured before `InstanceStart`.
#[derive(Debug, Clone, PartialEq)]
pub struct VmConfig {
    /// `PUT /logger`.
    pub logger: Option<Logger>,
    /// `PUT /metrics`.
    pub metrics: Option<Metrics>,
    /// `PUT /serial`.
    pub serial: Option<SerialDevice>,
    /// `PUT /boot-source`.
    pub boot_source: BootSource,
    /// `PUT /drives/{id}`, in this order (the guest names them vda, vdb, … in this order).
    pub drives: Vec<Drive>,
    /// `PUT /machine-config`.
    pub machine: MachineConfiguration,
    /// `PUT /cpu-config`: a custom CPU template.
    pub cpu_config: Option<CustomCpuTemplate>,
    /// `PUT /network-interfaces/{id}`.
    pub network_interfaces: Vec<NetworkInterface>,
    /// `PUT /vsock`.
    pub vsock: Option<Vsock>,
    /// `PUT /entropy`.
    pub entropy: Option<EntropyDevice>,
}

/// How long one request took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepTiming {
    /// `METHOD /path`.
    pub step: String,
    /// Wall time of the request (connect included).
    pub took: Duration,
}

async fn timed<F>(
    timings: &mut Vec<StepTiming>,
    step: String,
    request: F,
) -> Result<(), ClientError>
where
    F: Future<Output = Result<(), ClientError>>,
{
    let started = Instant::now();
    request.await?;
    timings.push(StepTiming {
        step,
        took: started.elapsed(),
    });
    Ok(())
}

impl VmConfig {
    /// Sends the configuration, stopping at the first error.
    ///
    /// # Errors
    /// The first [`ClientError`].
    pub async fn apply(&self, client: &FirecrackerClient) -> Result<Vec<StepTiming>, ClientError> {
        let mut t = Vec::new();
        if let Some(logger) = &self.logger {
            timed(&mut t, "PUT /logger".into(), client.put_logger(logger)).await?;
        }
        if let Some(metrics) = &self.metrics {
            timed(&mut t, "PUT /metrics".into(), client.put_metrics(metrics)).await?;
        }
        if let Some(serial) = &self.serial {
            timed(&mut t, "PUT /serial".into(), client.put_serial(serial)).await?;
        }
        timed(
            &mut t,
            "PUT /boot-source".into(),
            client.put_boot_source(&self.boot_source),
        )
        .await?;
        for drive in &self.drives {
            timed(
                &mut t,
                format!("PUT /drives/{}", drive.drive_id),
                client.put_drive(drive),
            )
            .await?;
        }
        timed(
            &mut t,
            "PUT /machine-config".into(),
            client.put_machine_config(&self.machine),
        )
        .await?;
        if let Some(template) = &self.cpu_config {
            timed(
                &mut t,
                "PUT /cpu-config".into(),
                client.put_cpu_config(template),
            )
            .await?;
        }
        for iface in &self.network_interfaces {
            timed(
                &mut t,
                format!("PUT /network-interfaces/{}", iface.iface_id),
                client.put_network_interface(iface),
            )
            .await?;
        }
        if let Some(vsock) = &self.vsock {
            timed(&mut t, "PUT /vsock".into(), client.put_vsock(vsock)).await?;
        }
        if let Some(entropy) = &self.entropy {
            timed(&mut t, "PUT /entropy".into(), client.put_entropy(entropy)).await?;
        }
        Ok(t)
    }

    /// [`Self::apply`], then `InstanceStart`.
    ///
    /// # Errors
    /// The first [`ClientError`].
    pub async fn boot(&self, client: &FirecrackerClient) -> Result<Vec<StepTiming>, ClientError> {
        let mut t = self.apply(client).await?;
        timed(
            &mut t,
            "PUT /actions InstanceStart".into(),
            client.instance_start(),
        )
        .await?;
        Ok(t)
    }
}
