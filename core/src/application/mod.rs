//! Visa applications: their status machine and their storage.

mod status;
pub mod store;

pub use status::{ApplicationEvent, ApplicationRefusal, ApplicationStatus};
pub use store::{
    Actor, AdminFilter, Application, ApplicationChanges, ApplicationError, Decision, FixedFee, Page,
};
