//! Compliance profiles: what `PCI-DSS` and `GDPR` tighten, in one place.
//! The README's compliance table documents exactly these rules.

use crate::api::{ComplianceProfile, Isolation, PodSecurityLevel, TenantSpec};

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
}

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
        let rotation_period = if pci { period.min(super::secrets::PCI_MAX_ROTATION) } else { period };
        Ok(Self {
            rotation_period,
            pod_security: spec.pod_security,
            isolation: spec.network.isolation,
            exec_allowed: !(pci || gdpr),
            egress_needs_ports: pci,
        })
    }
}
