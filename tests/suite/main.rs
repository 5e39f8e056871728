//! The integration suite: every test that runs the real parts together, in
//! one binary so that the suite links once.

mod harness;

mod ambiguity_pin;
mod audit;
mod bad_input;
mod breaker_fleet;
mod callbacks;
mod callbacks_killed;
mod caps;
mod claim_given_up;
mod config;
mod dev_drills;
mod digests;
mod dlq;
mod drills;
mod failover;
mod fleet_end_to_end;
mod intake_routing;
mod limits;
mod metrics;
mod prefs;
mod preview;
mod quiet_at_delivery;
mod quiet_hours_end_to_end;
mod redis_down_at_start;
mod refused_writes;
mod repeated_statuses;
mod revoked_claim;
mod scheduler_crash;
mod secrets;
mod smtp_provider;
mod soak;
mod store;
mod suppressed_routes;
mod templates_check;
mod topics;
mod traces;
mod worker_crash;
