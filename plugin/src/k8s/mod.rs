//! The only module that talks to the Kubernetes API server: KivePolicy and
//! Pod watchers, the stores they feed, Events on policy objects, and the
//! CRD generated from the types.

pub mod convert;
pub mod crd;
pub mod events;
mod reconcile;
pub mod source;
pub mod store;

pub use source::{ClusterConfig, ClusterSource, ClusterStatus, K8sError};
