//! Compliance profiles: what `PCI-DSS` and `GDPR` tighten, in one place.
//! The README's compliance table documents exactly these rules.

use crate::api::{AuditMode, ComplianceProfile, Isolation, PodSecurityLevel, TenantSpec};

use super::PlanError;

/// The settings a tenant really gets once its compliance profiles are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effective {
    /// Pod Security Admission level.
    pub pod_security: PodSecurityLevel,
    /// Network isolation mode.
    pub isolation: Isolation,
    /// Whether admin and developer profiles may exec, attach and port-forward into pods.
    pub exec_allowed: bool,
    /// Whether egress exceptions must name ports (no open-ended egress).
    pub egress_needs_ports: bool,
    /// Key rotation period, capped by PCI-DSS.
    pub rotation_period: jiff::SignedDuration,
    /// Audit sidecar mode: PCI-DSS makes it `Required`.
    pub audit_mode: AuditMode,
    /// Linux capabilities a container may add: what the Pod Security level allows, none under PCI-DSS.
    pub allowed_capabilities: &'static [&'static str],
}

/// Capabilities the `baseline` Pod Security level lets a container add (also the ceiling under `privileged`:
/// bulkhead never admits capabilities beyond it).
pub const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
/// Capabilities the `restricted` Pod Security level lets a container add.
pub const RESTRICTED_CAPABILITIES: &[&str] = &["NET_BIND_SERVICE"];

impl Effective {
    /// Applies the compliance profiles to a spec; errors name the conflicting setting.
    pub fn of(spec: &TenantSpec) -> Result<Self, PlanError> {
        let pci = spec.compliance.contains(&ComplianceProfile::PciDss);
        let gdpr = spec.compliance.contains(&ComplianceProfile::Gdpr);
        for (on, profile) in [(pci, "PCI-DSS"), (gdpr, "GDPR")] {
            if on && spec.network.isolation != Isolation::Strict {
                return Err(PlanError::Compliance { profile, what: "network.isolation: None" });
            }
        }
        if pci && spec.pod_security != PodSecurityLevel::Restricted {
            return Err(PlanError::Compliance {
                profile: "PCI-DSS",
                what: "a podSecurity level other than restricted",
            });
        }
        if pci {
            for peer in &spec.network.egress_to {
                if peer.ports.is_empty() {
                    return Err(PlanError::Compliance {
                        profile: "PCI-DSS",
                        what: "network.egressTo entries without ports (list the ports each destination needs)",
                    });
                }
                if matches!(peer.cidr.as_deref(), Some("0.0.0.0/0") | Some("::/0")) {
                    return Err(PlanError::Compliance {
                        profile: "PCI-DSS",
                        what: "egress to the whole internet (0.0.0.0/0 or ::/0)",
                    });
                }
            }
        }
        let period: jiff::SignedDuration =
            spec.secrets.rotation_period.parse().map_err(|_| PlanError::InvalidDuration {
                field: "spec.secrets.rotationPeriod",
                value: spec.secrets.rotation_period.clone(),
            })?;
        if period < jiff::SignedDuration::from_secs(10) {
            return Err(PlanError::InvalidDuration {
                field: "spec.secrets.rotationPeriod",
                value: spec.secrets.rotation_period.clone(),
            });
        }
        if pci && spec.audit.mode == AuditMode::Disabled {
            return Err(PlanError::Compliance { profile: "PCI-DSS", what: "audit.mode: Disabled" });
        }
        let rotation_period = if pci { period.min(super::secrets::PCI_MAX_ROTATION) } else { period };
        let allowed_capabilities = match (pci, spec.pod_security) {
            (true, _) => &[],
            (false, PodSecurityLevel::Restricted) => RESTRICTED_CAPABILITIES,
            (false, _) => BASELINE_CAPABILITIES,
        };
        Ok(Self {
            audit_mode: if pci { AuditMode::Required } else { spec.audit.mode },
            allowed_capabilities,
            rotation_period,
            pod_security: spec.pod_security,
            isolation: spec.network.isolation,
            exec_allowed: !(pci || gdpr),
            egress_needs_ports: pci,
        })
    }
}
