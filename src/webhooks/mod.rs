//! Webhooks: what latchkey tells an app, signed per the Standard Webhooks specification.
//!
//! A flow never calls a receiver. It writes one row per event and endpoint to the webhook queue
//! (`webhook_outbox`) inside its own transaction (`store::flows::events`), so an event exists
//! exactly when what it tells about was committed. After the commit the flow wakes this
//! instance's webhook worker (`worker`), which claims due rows with the outbox's lease, delivers
//! them with no transaction open (`deliver`), and records the outcome: delivered (a 2xx answer),
//! due again after an exponential backoff with jitter, or dead after `webhook_max_attempts`.
//! The webhook worker is not the mail worker, and their queues are separate tables: a receiver
//! that is down never delays an email, nor a dead SMTP relay a webhook.
//!
//! Delivery is at least once: a worker that dies between the receiver's answer and the record
//! leaves a lease that expires, and the event is sent again with the same `webhook-id`, which is
//! what receivers deduplicate on.

pub mod admin;
pub mod deliver;
pub mod endpoint;
pub mod event;
pub mod sign;
pub mod worker;

pub use deliver::Webhooks;
