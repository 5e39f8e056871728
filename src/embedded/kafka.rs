//! librdkafka's mock cluster, kept on a thread of its own (`MockCluster` is
//! `!Send`) and driven through a channel.

use rdkafka::mocking::MockCluster;
use std::sync::mpsc;
use std::thread::JoinHandle;

enum Command {
    CreateTopic(String, i32, mpsc::Sender<Result<(), String>>),
    /// Takes a broker down (`false`: its connections cut, new ones refused) or back up.
    Broker(i32, bool, mpsc::Sender<Result<(), String>>),
    /// Answers every write with a retriable error (`true`), or no longer.
    RefuseWrites(bool, mpsc::Sender<Result<(), String>>),
    /// Says in its metadata that a topic may not be written (`true`), or no longer.
    Forbid(String, bool, mpsc::Sender<Result<(), String>>),
}

pub struct EmbeddedKafka {
    bootstrap: String,
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedKafka {
    /// Starts a cluster of `brokers` brokers on loopback.
    pub fn start(brokers: i32) -> Result<Self, String> {
        let (tx, rx) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("mock-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Runs until every sender is dropped.
                for command in rx {
                    let (done, reply) = match command {
                        Command::CreateTopic(name, partitions, reply) => {
                            (cluster.create_topic(&name, partitions, 1), reply)
                        }
                        Command::Broker(id, true, reply) => (cluster.broker_up(id), reply),
                        Command::Broker(id, false, reply) => (cluster.broker_down(id), reply),
                        Command::RefuseWrites(refuse, reply) => {
                            let produce = rdkafka::types::RDKafkaApiKey::Produce;
                            if refuse {
                                let retriable = rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS;
                                cluster.request_errors(produce, &[retriable; 100_000]);
                            } else {
                                cluster.clear_request_errors(produce);
                            }
                            (Ok(()), reply)
                        }
                        Command::Forbid(topic, forbid, reply) => {
                            use rdkafka::types::RDKafkaRespErr as E;
                            let error = if forbid {
                                E::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED
                            } else {
                                E::RD_KAFKA_RESP_ERR_NO_ERROR
                            };
                            (cluster.topic_error(&topic, error), reply)
                        }
                    };
                    let _ = reply.send(done.map_err(|e| e.to_string()));
                }
            })
            .map_err(|e| e.to_string())?;
        let bootstrap = ready_rx.recv().map_err(|e| e.to_string())??;
        Ok(EmbeddedKafka { bootstrap, commands: Some(tx), thread: Some(thread) })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), String> {
        self.ask(|reply| Command::CreateTopic(name.to_string(), partitions, reply))
    }

    /// Takes broker `id` (from 1) down, as a crash or a partition would:
    /// its connections are cut and new ones refused until [`Self::broker_up`].
    pub fn broker_down(&self, id: i32) -> Result<(), String> {
        self.ask(|reply| Command::Broker(id, false, reply))
    }

    pub fn broker_up(&self, id: i32) -> Result<(), String> {
        self.ask(|reply| Command::Broker(id, true, reply))
    }

    /// Makes the cluster answer every write with a retriable error (producers
    /// retry and hold their records), or write again.
    pub fn refuse_writes(&self, refuse: bool) -> Result<(), String> {
        self.ask(|reply| Command::RefuseWrites(refuse, reply))
    }

    /// Makes the cluster say, to every client that reads its metadata from
    /// now on, that `topic` may not be written or read (an ACL that denies
    /// it), or no longer: a write refused for good.
    pub fn forbid(&self, topic: &str, forbid: bool) -> Result<(), String> {
        self.ask(|reply| Command::Forbid(topic.to_string(), forbid, reply))
    }

    fn ask(&self, command: impl FnOnce(mpsc::Sender<Result<(), String>>) -> Command) -> Result<(), String> {
        let (reply, answer) = mpsc::channel();
        let commands = self.commands.as_ref().ok_or("mock cluster stopped")?;
        commands.send(command(reply)).map_err(|_| "mock cluster stopped".to_string())?;
        answer.recv().map_err(|_| "mock cluster stopped".to_string())?
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        self.commands.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
