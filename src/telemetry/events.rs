//! Kubernetes Events (`events.k8s.io/v1`), published as kube's recorder
//! does: a repeat of an event within six minutes (same type, reason,
//! action, regarding and related object) becomes the first one's series
//! instead of another Event.
//!
//! kube's recorder keeps every Event it published for those six minutes,
//! typed, in a map that never shrinks: after a thousand tenants converged
//! (one Event each) that was 3.4 MB of a 40 MB heap. This one remembers a
//! digest of each event's identity, the Event's name and its count, and
//! gives the memory back once they expire.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as KubeEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};

/// How long a published event is a series' first: kube's, and client-go's, six minutes.
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// What a published event is remembered by.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Published {
    name: Box<str>,
    count: i32,
    last: Timestamp,
}

/// The events of the last [`SERIES_WINDOW`], by a digest of their identity.
#[derive(Debug, Default)]
struct Recent(HashMap<u64, Published>);

impl Recent {
    /// Forgets what is older than the window, and the room it took.
    fn expire(&mut self, now: Timestamp) {
        self.0.retain(|_, p| p.last + SERIES_WINDOW > now);
        if self.0.capacity() > 4 * self.0.len().max(16) {
            self.0.shrink_to_fit();
        }
    }

    /// The Event a repeat of `key` at `now` continues, with its new count.
    fn repeat(&mut self, key: u64, now: Timestamp) -> Option<Published> {
        self.expire(now);
        self.0.get(&key).map(|p| Published { count: p.count + 1, last: now, ..p.clone() })
    }

    fn remember(&mut self, key: u64, published: Published) {
        self.0.insert(key, published);
    }
}

fn identity(ev: &Event, regarding: &ObjectReference) -> u64 {
    let reference = |r: &ObjectReference| {
        (r.api_version.clone(), r.kind.clone(), r.namespace.clone(), r.name.clone(), r.uid.clone())
    };
    let mut h = DefaultHasher::new();
    (matches!(ev.type_, EventType::Warning), &ev.reason, &ev.action, reference(regarding)).hash(&mut h);
    ev.secondary.as_ref().map(reference).hash(&mut h);
    h.finish()
}

/// Publishes Events for one reporting controller; cheap to share behind an `Arc`.
pub struct Recorder {
    client: kube::Client,
    reporter: Reporter,
    recent: Mutex<Recent>,
}

impl Recorder {
    /// A recorder reporting as `reporter`.
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        Self { client, reporter, recent: Mutex::default() }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // The map holds no invariant a panicking holder could break.
        self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes `ev` about `regarding` (cluster-scoped objects' Events go to `default`).
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = identity(ev, regarding);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<KubeEvent> = Api::namespaced(self.client.clone(), namespace);
        let repeat = self.recent().repeat(key, now);
        if let Some(series) = repeat {
            let patch = serde_json::json!({
                "series": EventSeries { count: series.count, last_observed_time: MicroTime(now) }
            });
            match api.patch(&series.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    self.recent().remember(key, series);
                    return Ok(());
                }
                // Gone (deleted, or past the apiserver's event TTL): a new Event starts a new series.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let controller = &self.reporter.controller;
        let event = KubeEvent {
            metadata: ObjectMeta {
                namespace: Some(namespace.to_string()),
                name: Some(format!("{}.{:x}", regarding.name.as_deref().unwrap_or(controller), now.as_nanosecond())),
                ..Default::default()
            },
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(self.reporter.instance.clone().unwrap_or_else(|| controller.clone())),
            type_: Some(if matches!(ev.type_, EventType::Warning) { "Warning" } else { "Normal" }.into()),
            ..Default::default()
        };
        let created = api.create(&PostParams::default(), &event).await?;
        let name = created.metadata.name.unwrap_or_default();
        self.recent().remember(key, Published { name: name.into(), count: 1, last: now });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(reason: &str, related: Option<&str>) -> Event {
        Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some("note".into()),
            action: "repair".into(),
            secondary: related.map(|n| ObjectReference { name: Some(n.into()), ..Default::default() }),
        }
    }

    fn tenant(name: &str) -> ObjectReference {
        ObjectReference { kind: Some("Tenant".into()), name: Some(name.into()), ..Default::default() }
    }

    #[test]
    fn an_event_is_known_by_type_reason_action_and_both_objects_not_its_note() {
        let base = identity(&event("DriftRepaired", Some("np")), &tenant("acme"));
        let mut other_note = event("DriftRepaired", Some("np"));
        other_note.note = Some("another note".into());
        assert_eq!(identity(&other_note, &tenant("acme")), base);
        assert_ne!(identity(&event("DriftRepaired", Some("rb")), &tenant("acme")), base);
        assert_ne!(identity(&event("DriftRepaired", None), &tenant("acme")), base);
        assert_ne!(identity(&event("CheckFailed", Some("np")), &tenant("acme")), base);
        assert_ne!(identity(&event("DriftRepaired", Some("np")), &tenant("other")), base);
        let mut normal = event("DriftRepaired", Some("np"));
        normal.type_ = EventType::Normal;
        assert_ne!(identity(&normal, &tenant("acme")), base);
    }

    #[test]
    fn repeats_within_six_minutes_continue_the_series_and_later_ones_start_anew() {
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        let mut recent = Recent::default();
        assert_eq!(recent.repeat(7, t0), None, "nothing published yet");
        let first = Published { name: "acme.1".into(), count: 1, last: t0 };
        recent.remember(7, first);
        let t1 = t0 + SignedDuration::from_mins(5);
        let second = recent.repeat(7, t1).expect("a repeat within the window");
        assert_eq!((&*second.name, second.count, second.last), ("acme.1", 2, t1));
        recent.remember(7, second);
        // The window runs from the last repeat.
        let t2 = t1 + SignedDuration::from_mins(5);
        assert_eq!(recent.repeat(7, t2).map(|p| p.count), Some(3));
        assert_eq!(recent.repeat(7, t2 + SignedDuration::from_mins(7)), None, "expired");
        assert!(recent.0.is_empty());
    }

    #[test]
    fn a_burst_gives_its_memory_back_once_expired() {
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        let mut recent = Recent::default();
        for key in 0..1_000u64 {
            recent.remember(key, Published { name: "t".into(), count: 1, last: t0 });
        }
        assert!(recent.0.capacity() >= 1_000);
        recent.expire(t0 + SignedDuration::from_mins(7));
        assert!(recent.0.is_empty() && recent.0.capacity() < 1_000, "capacity {}", recent.0.capacity());
    }
}
