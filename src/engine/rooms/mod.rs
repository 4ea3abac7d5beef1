//! The rooms: who is in each (publishers with their tracks, viewers with what they asked to
//! see), who feeds which viewer slot, the events members are sent, the views the room API
//! shows, and a room spread over shards (`relay`).

pub(in crate::engine) mod api;
pub(in crate::engine) mod assign;
pub(in crate::engine) mod decodable;
pub(in crate::engine) mod events;
pub(in crate::engine) mod relay;
pub(in crate::engine) mod room;
