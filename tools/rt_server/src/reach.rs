//! How a hub's messages reach sockets: this process only, or every node
//! through the backplane (`--redis`). The single-process path is today's,
//! with nothing added per message.

use backplane::{BackplaneError, Presence, PresenceMember};
use ws_broadcast::{Broadcast, ws_broadcast_all};
use ws_cluster::WsCluster;
use ws_emit::ws_emit;
use ws_event::{Event, Target};
use ws_hub::{Message, WsHub};

/// A hub, alone or one node of a cluster.
#[derive(Debug, Clone)]
pub(crate) enum Reach {
    /// This process's sockets only.
    Local(WsHub),
    /// Every node's sockets.
    Cluster(WsCluster),
}

impl Reach {
    pub(crate) fn hub(&self) -> &WsHub {
        match self {
            Reach::Local(hub) => hub,
            Reach::Cluster(c) => c.hub(),
        }
    }

    /// The cluster, on a node of several.
    pub(crate) fn cluster(&self) -> Option<&WsCluster> {
        match self {
            Reach::Local(_) => None,
            Reach::Cluster(c) => Some(c),
        }
    }

    /// `event` to `target` everywhere; `Err` (answer 503) when the
    /// backplane did not take it, and then no socket got it.
    pub(crate) async fn emit(
        &self,
        event: &Event,
        target: &Target,
    ) -> Result<Broadcast, BackplaneError> {
        match self {
            Reach::Local(hub) => Ok(ws_emit(hub, event, target)),
            Reach::Cluster(c) => c.emit(event, target).await,
        }
    }

    /// `texts` in order to every socket everywhere; `Err` as [`Reach::emit`].
    pub(crate) async fn broadcast(&self, texts: Vec<String>) -> Result<Broadcast, BackplaneError> {
        match self {
            Reach::Local(hub) => {
                let msgs: Vec<Message> = texts.into_iter().map(Message::text).collect();
                Ok(ws_broadcast_all(hub, &msgs))
            }
            Reach::Cluster(c) => {
                let mut all = Broadcast::default();
                for text in texts {
                    all.add(c.send(text, &Target::broadcast()).await?);
                }
                Ok(all)
            }
        }
    }

    /// `event` to `target`: local sockets now, other nodes when the
    /// backplane takes it (a failure is counted, not returned).
    pub(crate) fn emit_from_socket(&self, event: &Event, target: &Target) {
        match self {
            Reach::Local(hub) => {
                ws_emit(hub, event, target);
            }
            Reach::Cluster(c) => {
                c.emit_local_first(event, target);
            }
        }
    }

    /// A socket's text messages (one read burst) to every socket, as
    /// [`Reach::emit_from_socket`]: alone, framed together and queued with
    /// one send per socket.
    pub(crate) fn broadcast_from_socket(&self, msgs: &[Message]) {
        match self {
            Reach::Local(hub) => {
                ws_broadcast_all(hub, msgs);
            }
            Reach::Cluster(c) => {
                for msg in msgs {
                    if let Message::Text(text) = msg {
                        c.send_local_first(text.as_str(), &Target::broadcast());
                    }
                }
            }
        }
    }

    /// Who is in `room`: this process's members, or every node's.
    pub(crate) async fn presence(&self, room: &str) -> Result<Presence, BackplaneError> {
        match self {
            Reach::Local(hub) => {
                let mut members = Vec::new();
                hub.for_each_in(&[], &[room.to_string()], &[], |client| {
                    members.push(PresenceMember {
                        client: client.id(),
                        user: client.user().map(str::to_string),
                    });
                });
                members.sort();
                Ok(Presence { members })
            }
            Reach::Cluster(c) => c.presence(room).await,
        }
    }

    /// Waits until what the cluster queued (forwards, presence) went out.
    pub(crate) async fn flush(&self) {
        if let Reach::Cluster(c) = self {
            c.flush().await;
        }
    }
}
