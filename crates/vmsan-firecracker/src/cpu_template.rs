//! CPU templates: Firecracker's static ones (`cpu_template` of `PUT /machine-config`) and
//! custom ones (`PUT /cpu-config`).
//!
//! A custom template is checked here by the rules Firecracker v1.16.1 applies on x86_64 (as the
//! real binary answered them; the stand-in's API tests pin the same answers), so a bad file is
//! refused when the VM is created, with the field that is wrong, and not minutes later at boot.
//! What is sent is the checked document re-serialised: nothing the check did not see.

use serde::{Deserialize, Serialize};

use crate::models::CpuTemplate;

/// Largest custom template file vmsan reads.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Most entries in any one list of a custom template.
const MAX_ENTRIES: usize = 1024;

/// The static template names Firecracker v1.16.1 accepts on this architecture (`V1N1` is
/// aarch64's; on x86_64 Firecracker refuses it).
#[must_use]
pub fn static_names() -> &'static [&'static str] {
    if cfg!(target_arch = "aarch64") {
        &["V1N1", "None"]
    } else {
        &["C3", "T2", "T2S", "T2CL", "T2A", "None"]
    }
}

/// The static template named `name` (exact spelling, as Firecracker's API), if this
/// architecture has it.
#[must_use]
pub fn parse_static(name: &str) -> Option<CpuTemplate> {
    if !static_names().contains(&name) {
        return None;
    }
    Some(match name {
        "C3" => CpuTemplate::C3,
        "T2" => CpuTemplate::T2,
        "T2S" => CpuTemplate::T2S,
        "T2CL" => CpuTemplate::T2CL,
        "T2A" => CpuTemplate::T2A,
        "V1N1" => CpuTemplate::V1N1,
        _ => CpuTemplate::None,
    })
}

/// A CPUID register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuidRegister {
    /// EAX.
    Eax,
    /// EBX.
    Ebx,
    /// ECX.
    Ecx,
    /// EDX.
    Edx,
}

/// One register of a CPUID leaf and the bits to force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuidRegisterModifier {
    /// Which register.
    pub register: CpuidRegister,
    /// `0b` and up to 32 of `0`, `1`, `x` (leave), `_` (ignored), most significant first.
    pub bitmap: String,
}

/// Modifiers of one CPUID leaf and subleaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuidLeafModifier {
    /// Leaf, `0x…` or `0b…`.
    pub leaf: String,
    /// Subleaf, `0x…` or `0b…`.
    pub subleaf: String,
    /// KVM's flags for this leaf.
    pub flags: u32,
    /// The registers.
    pub modifiers: Vec<CpuidRegisterModifier>,
}

/// A model-specific register and the bits to force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MsrModifier {
    /// Address, `0x…` or `0b…`.
    pub addr: String,
    /// `0b` and up to 64 of `0`, `1`, `x`, `_`.
    pub bitmap: String,
}

/// A custom CPU template (x86_64 fields; Firecracker on x86_64 refuses the aarch64 ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomCpuTemplate {
    /// KVM capabilities to add (`"121"`) or remove (`"!121"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kvm_capabilities: Vec<String>,
    /// CPUID modifiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpuid_modifiers: Vec<CpuidLeafModifier>,
    /// MSR modifiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub msr_modifiers: Vec<MsrModifier>,
}

/// Why a custom template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// A `0x`/`0b` number that fits 32 bits, as Firecracker parses leaves, subleaves and MSR
/// addresses (a bare decimal is refused there, whatever its documentation says).
fn prefixed_u32(what: &str, s: &str) -> Result<u32, TemplateError> {
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x") {
        (h, 16)
    } else if let Some(b) = s.strip_prefix("0b") {
        (b, 2)
    } else {
        return Err(TemplateError(format!(
            "{what} {s:?} needs a 0x (hexadecimal) or 0b (binary) prefix"
        )));
    };
    u32::from_str_radix(digits, radix)
        .map_err(|e| TemplateError(format!("{what} {s:?} is not a 32-bit number: {e}")))
}

/// A bitmap of at most `bits` positions: optional `0b`, then `0`, `1`, `x` (`_` ignored).
fn check_bitmap(what: &str, s: &str, bits: usize) -> Result<(), TemplateError> {
    let body = s.strip_prefix("0b").unwrap_or(s);
    let mut n = 0;
    for c in body.chars() {
        match c {
            '0' | '1' | 'x' => n += 1,
            '_' => {}
            other => {
                return Err(TemplateError(format!(
                    "{what} {s:?}: {other:?} is not 0, 1, x or _"
                )));
            }
        }
    }
    if n == 0 || n > bits {
        return Err(TemplateError(format!(
            "{what} {s:?} must have 1 to {bits} bits"
        )));
    }
    Ok(())
}

impl CustomCpuTemplate {
    /// Parse and check a template file's bytes.
    ///
    /// # Errors
    /// [`TemplateError`] naming the first field that is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self, TemplateError> {
        if bytes.len() > MAX_TEMPLATE_BYTES {
            return Err(TemplateError(format!(
                "the template is {} bytes; at most {MAX_TEMPLATE_BYTES} are read",
                bytes.len()
            )));
        }
        let t: Self = serde_json::from_slice(bytes)
            .map_err(|e| TemplateError(format!("not a CPU template: {e}")))?;
        t.check()?;
        Ok(t)
    }

    /// Check every field (also for a template read back from a state file).
    ///
    /// # Errors
    /// [`TemplateError`] naming the first field that is wrong.
    pub fn check(&self) -> Result<(), TemplateError> {
        if self.kvm_capabilities.len() > MAX_ENTRIES
            || self.cpuid_modifiers.len() > MAX_ENTRIES
            || self.msr_modifiers.len() > MAX_ENTRIES
        {
            return Err(TemplateError(format!(
                "a list has more than {MAX_ENTRIES} entries"
            )));
        }
        for cap in &self.kvm_capabilities {
            let n = cap.strip_prefix('!').unwrap_or(cap);
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.parse::<u32>().is_err() {
                return Err(TemplateError(format!(
                    "kvm_capabilities entry {cap:?} is not a capability number (\"121\" adds, \"!121\" removes)"
                )));
            }
        }
        for leaf in &self.cpuid_modifiers {
            prefixed_u32("cpuid_modifiers leaf", &leaf.leaf)?;
            prefixed_u32("cpuid_modifiers subleaf", &leaf.subleaf)?;
            if leaf.modifiers.len() > MAX_ENTRIES {
                return Err(TemplateError(format!(
                    "leaf {} has more than {MAX_ENTRIES} modifiers",
                    leaf.leaf
                )));
            }
            for m in &leaf.modifiers {
                check_bitmap("cpuid_modifiers bitmap", &m.bitmap, 32)?;
            }
        }
        for msr in &self.msr_modifiers {
            prefixed_u32("msr_modifiers addr", &msr.addr)?;
            check_bitmap("msr_modifiers bitmap", &msr.bitmap, 64)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<CustomCpuTemplate, TemplateError> {
        CustomCpuTemplate::parse(s.as_bytes())
    }

    const NO_BMI2: &str = r#"{"cpuid_modifiers":[{"leaf":"0x7","subleaf":"0x0","flags":1,
        "modifiers":[{"register":"ebx","bitmap":"0bxxxxxxxxxxxxxxxxxxxxxxx0xxxxxxxx"}]}]}"#;

    #[test]
    fn a_template_that_hides_bmi2_is_accepted_and_sent_back_unchanged() {
        let t = parse(NO_BMI2).unwrap();
        assert_eq!(
            t.cpuid_modifiers[0].modifiers[0].register,
            CpuidRegister::Ebx
        );
        let again: CustomCpuTemplate =
            serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(again, t);
        assert!(parse("{}").is_ok());
        assert!(parse(r#"{"kvm_capabilities":["121","!122"]}"#).is_ok());
        assert!(parse(r#"{"msr_modifiers":[{"addr":"0b1","bitmap":"0b1_0"}]}"#).is_ok());
    }

    #[test]
    fn what_firecracker_refuses_is_refused_here() {
        for (bad, says) in [
            (r#"{"bogus":1}"#, "unknown field `bogus`"),
            (r#"{"reg_modifiers":[]}"#, "unknown field `reg_modifiers`"),
            (r#"{"vcpu_features":[]}"#, "unknown field `vcpu_features`"),
            (r#"{"kvm_capabilities":["x"]}"#, "capability number"),
            (
                r#"{"kvm_capabilities":["4294967296"]}"#,
                "capability number",
            ),
            (
                r#"{"cpuid_modifiers":[{"leaf":"7","subleaf":"0x0","flags":0,"modifiers":[]}]}"#,
                "prefix",
            ),
            (
                r#"{"cpuid_modifiers":[{"leaf":"0x100000000","subleaf":"0x0","flags":0,"modifiers":[]}]}"#,
                "32-bit",
            ),
            (
                r#"{"cpuid_modifiers":[{"leaf":"0x7","subleaf":"0x0","flags":-1,"modifiers":[]}]}"#,
                "expected u32",
            ),
            (
                r#"{"cpuid_modifiers":[{"leaf":"0x7","subleaf":"0x0","flags":0,"modifiers":[{"register":"exx","bitmap":"0b1"}]}]}"#,
                "unknown variant `exx`",
            ),
            (
                r#"{"cpuid_modifiers":[{"leaf":"0x7","subleaf":"0x0","flags":0,"modifiers":[{"register":"ebx","bitmap":"0b2"}]}]}"#,
                "not 0, 1, x or _",
            ),
            (
                r#"{"cpuid_modifiers":[{"leaf":"0x7","subleaf":"0x0","flags":0,"modifiers":[{"register":"ebx","bitmap":"0b111111111111111111111111111111111"}]}]}"#,
                "1 to 32 bits",
            ),
            (
                r#"{"cpuid_modifiers":[{"leaf":"0x7","subleaf":"0x0","flags":0}]}"#,
                "missing field `modifiers`",
            ),
            (
                r#"{"msr_modifiers":[{"addr":"0x10a"}]}"#,
                "missing field `bitmap`",
            ),
            ("not json", "not a CPU template"),
        ] {
            let e = parse(bad).unwrap_err().0;
            assert!(e.contains(says), "{bad}: {e}");
        }
        let huge = format!(
            r#"{{"kvm_capabilities":["1"{}]}}"#,
            r#","1""#.repeat(MAX_TEMPLATE_BYTES)
        );
        assert!(parse(&huge).unwrap_err().0.contains("at most"));
    }

    #[test]
    fn static_names_are_firecrackers_for_this_architecture() {
        assert_eq!(parse_static("T2"), Some(CpuTemplate::T2));
        assert_eq!(parse_static("None"), Some(CpuTemplate::None));
        assert_eq!(parse_static("t2"), None);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(parse_static("V1N1"), None);
            assert_eq!(parse_static("T2A"), Some(CpuTemplate::T2A));
        }
    }
}
