//! Real infrastructure on this machine, for `tidings dev` and the tests.
//!
//! - [`kafka`]: librdkafka's mock cluster (real protocol over loopback TCP).
//! - [`redis`]: a private `redis-server` process on a free port, or three
//!   joined into a Redis Cluster.
//! - [`tansu`]: a tansu broker process, the real broker of the real-broker tier.

pub mod kafka;
mod process;
pub mod redis;
pub mod tansu;

pub use self::kafka::EmbeddedKafka;
pub use self::redis::{RedisCluster, RedisServer};
pub use self::tansu::TansuBroker;
