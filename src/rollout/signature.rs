//! The signature gate, whatever the strategy: a candidate must not silently change the inputs and outputs
//! clients call. Its signature, as its pods report it, is compared with the active revision's before any traffic
//! moves; a breaking change holds it unless `spec.rollout.allowSignatureChange` lets it through, and compatible
//! changes pass and are noted. The comparison itself is the contract's (`compare_signatures`), so the server's
//! and the operator's idea of "compatible" cannot drift apart.

use super::{Observed, ObservedRevision, Reported};
use crate::api::ModelSignature;
use crate::server_contract::{compare_signatures, Signature, TensorSpec};

/// What the gate says of a candidate whose pods are all available.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Traffic may move; the compatible changes (possibly none) are noted.
    Pass(Vec<String>),
    /// A breaking change the spec does not allow; the list says what changed.
    Hold(Vec<String>),
    /// A ready pod of the candidate has not been read yet: its signature is not known.
    Wait,
}

pub fn check(observed: &Observed, candidate: &ObservedRevision, active: Option<&str>) -> Gate {
    let Some(active) = active.and_then(|r| observed.find(r)) else {
        return Gate::Pass(Vec::new());
    };
    let candidate = match candidate.signature() {
        Reported::Known(signature) => signature,
        Reported::Unknown => return Gate::Wait,
        // A server that does not report signatures cannot be compared; nothing to hold it on.
        Reported::NotReported => return Gate::Pass(Vec::new()),
    };
    let Reported::Known(active) = active.signature() else {
        // The active pods do not answer (or predate the report): nothing to compare with.
        return Gate::Pass(Vec::new());
    };
    let diff = compare_signatures(&contract(active), &contract(candidate));
    if diff.breaking.is_empty() || observed.spec.rollout.allow_signature_change {
        let mut noted = diff.breaking;
        noted.extend(diff.compatible);
        Gate::Pass(noted)
    } else {
        Gate::Hold(diff.breaking)
    }
}

fn contract(signature: &ModelSignature) -> Signature {
    let tensors = |list: &[crate::api::TensorSignature]| {
        list.iter()
            .map(|t| TensorSpec {
                name: t.name.clone(),
                datatype: t.datatype.clone(),
                shape: t.shape.clone(),
            })
            .collect()
    };
    Signature {
        inputs: tensors(&signature.inputs),
        outputs: tensors(&signature.outputs),
    }
}
