//! `PUT /cpu-config` as Firecracker v1.16.1 answers it on x86_64: a custom CPU template parsed
//! with the same rules and the same messages (each answer was taken from the real binary; the
//! cases are in `tests/api_requests.rs`). The stand-in runs no guest, so a template only has to
//! be accepted or refused like Firecracker's.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// A `0x…`/`0b…` number string (leaf, subleaf, MSR address).
fn prefixed_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = String::deserialize(d)?;
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x") {
        (h, 16)
    } else if let Some(b) = s.strip_prefix("0b") {
        (b, 2)
    } else {
        return Err(D::Error::custom(format!(
            "No supported number system prefix found in value [{s}]. Make sure to prefix the \
             number with '0x' for hexadecimal numbers or '0b' for binary numbers."
        )));
    };
    u32::from_str_radix(digits, radix).map_err(|e| {
        D::Error::custom(format!(
            "Failed to parse string [{s}] as a number for CPU template - {e:?}"
        ))
    })
}

/// A bitmap of `bits` positions: optional `0b`, then `0`, `1`, `x`; `_` is ignored.
fn bitmap<'de, D: Deserializer<'de>>(d: D, bits: usize) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let body = s.strip_prefix("0b").unwrap_or(&s);
    let mut n = 0;
    for b in body.bytes() {
        match b {
            b'0' | b'1' | b'x' => n += 1,
            b'_' => {}
            other => {
                return Err(D::Error::custom(format!(
                    "Failed to parse string [{s}] as a bitmap - unknown character: {other}"
                )));
            }
        }
        if n > bits {
            return Err(D::Error::custom(format!(
                "Failed to parse string [{s}] as a bitmap - string is too long"
            )));
        }
    }
    Ok(s)
}

fn bitmap32<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    bitmap(d, 32)
}

fn bitmap64<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    bitmap(d, 64)
}

fn register<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if matches!(s.as_str(), "eax" | "ebx" | "ecx" | "edx") {
        Ok(s)
    } else {
        Err(D::Error::custom(
            "Invalid CPUID register. Must be one of [eax, ebx, ecx, edx]",
        ))
    }
}

fn capabilities<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let caps = Vec::<CapabilityString>::deserialize(d)?;
    Ok(caps.into_iter().map(|c| c.0).collect())
}

/// One `kvm_capabilities` entry: a number, `!` in front to remove it.
struct CapabilityString(String);

impl<'de> Deserialize<'de> for CapabilityString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.strip_prefix('!')
            .unwrap_or(&s)
            .parse::<u32>()
            .map_err(|e| {
                D::Error::custom(format!(
                    "Failed to parse string [{s}] as a kvm capability - can not convert to numeric: {e}"
                ))
            })?;
        Ok(Self(s))
    }
}

/// Register modifier of a CPUID leaf (unknown fields are ignored here, as by Firecracker).
#[derive(Debug, Clone, Deserialize)]
pub struct CpuidRegisterModifier {
    /// `eax` … `edx`.
    #[serde(deserialize_with = "register")]
    pub register: String,
    /// The bits.
    #[serde(deserialize_with = "bitmap32")]
    pub bitmap: String,
}

/// A CPUID leaf's modifiers.
#[derive(Debug, Clone, Deserialize)]
pub struct CpuidLeafModifier {
    /// Leaf.
    #[serde(deserialize_with = "prefixed_u32")]
    pub leaf: u32,
    /// Subleaf.
    #[serde(deserialize_with = "prefixed_u32")]
    pub subleaf: u32,
    /// KVM flags.
    pub flags: u32,
    /// Registers.
    pub modifiers: Vec<CpuidRegisterModifier>,
}

/// An MSR modifier.
#[derive(Debug, Clone, Deserialize)]
pub struct MsrModifier {
    /// Address.
    #[serde(deserialize_with = "prefixed_u32")]
    pub addr: u32,
    /// The bits.
    #[serde(deserialize_with = "bitmap64")]
    pub bitmap: String,
}

/// `CustomCpuTemplate` (x86_64: no `reg_modifiers` or `vcpu_features`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomCpuTemplate {
    /// Capabilities to add or remove.
    #[serde(default, deserialize_with = "capabilities")]
    pub kvm_capabilities: Vec<String>,
    /// CPUID modifiers.
    #[serde(default)]
    pub cpuid_modifiers: Vec<CpuidLeafModifier>,
    /// MSR modifiers.
    #[serde(default)]
    pub msr_modifiers: Vec<MsrModifier>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        serde_json::from_str::<CustomCpuTemplate>(body)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn numbers_bitmaps_and_capabilities_fail_with_firecrackers_words() {
        assert_eq!(
            err(
                r#"{"cpuid_modifiers":[{"leaf":"0x100000000","subleaf":"0x0","flags":0,"modifiers":[]}]}"#
            ),
            "Failed to parse string [0x100000000] as a number for CPU template - ParseIntError { kind: PosOverflow } at line 1 column 41"
        );
        assert_eq!(
            err(r#"{"kvm_capabilities":["!"]}"#),
            "Failed to parse string [!] as a kvm capability - can not convert to numeric: cannot parse integer from empty string at line 1 column 25"
        );
        let ok: CustomCpuTemplate = serde_json::from_str(
            r#"{"cpuid_modifiers":[{"leaf":"0b111","subleaf":"0x0","flags":1,"modifiers":[{"register":"ebx","bitmap":"0b11111111_11111111_11111111_1111111_1","other":1}]}]}"#,
        )
        .unwrap();
        assert_eq!(ok.cpuid_modifiers[0].leaf, 7);
    }
}
