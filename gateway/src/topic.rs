//! Topic filters and who subscribed to what. Filters without wildcards sit
//! in a hash map (a receipt topic per account: the common case, one lookup
//! per message); filters with `+` or `#` are matched one by one, and there
//! are few (each connection holds a bounded number).

use std::collections::HashMap;

use mqtt_proto::QoS;

/// Whether `filter` matches `topic` by MQTT's rules: `+` is one level,
/// `#` (last) is that level and all below it, including the parent level
/// itself; a filter starting with a wildcard does not match a topic
/// starting with `$`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A subscriber: a connection slot and the connection's id (slots are
/// reused; the id is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subscriber {
    /// The connection's slot.
    pub slot: usize,
    /// The connection's unique id.
    pub conn_id: u64,
}

/// Every subscription of every connection.
#[derive(Default)]
pub struct Subscriptions {
    exact: HashMap<String, Vec<(Subscriber, QoS)>>,
    wild: Vec<(String, Subscriber, QoS)>,
}

impl Subscriptions {
    /// Adds or replaces (same subscriber, same filter) a subscription.
    pub fn add(&mut self, filter: &str, who: Subscriber, qos: QoS) {
        if filter.contains(['+', '#']) {
            match self
                .wild
                .iter_mut()
                .find(|(f, s, _)| f == filter && *s == who)
            {
                Some(e) => e.2 = qos,
                None => self.wild.push((filter.to_owned(), who, qos)),
            }
        } else {
            let subs = self.exact.entry(filter.to_owned()).or_default();
            match subs.iter_mut().find(|(s, _)| *s == who) {
                Some(e) => e.1 = qos,
                None => subs.push((who, qos)),
            }
        }
    }

    /// Removes one subscription; whether it existed.
    pub fn remove(&mut self, filter: &str, who: Subscriber) -> bool {
        if filter.contains(['+', '#']) {
            let before = self.wild.len();
            self.wild.retain(|(f, s, _)| !(f == filter && *s == who));
            return self.wild.len() != before;
        }
        let Some(subs) = self.exact.get_mut(filter) else {
            return false;
        };
        let before = subs.len();
        subs.retain(|(s, _)| *s != who);
        let removed = subs.len() != before;
        if subs.is_empty() {
            self.exact.remove(filter);
        }
        removed
    }

    /// Calls `f` with each subscriber whose filter matches `topic` and the
    /// QoS it asked for (a subscriber with several matching filters is
    /// called once per filter).
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(Subscriber, QoS)) {
        if let Some(subs) = self.exact.get(topic) {
            for (s, q) in subs {
                f(*s, *q);
            }
        }
        for (filter, s, q) in &self.wild {
            if matches(filter, topic) {
                f(*s, *q);
            }
        }
    }

    /// The number of subscriptions.
    pub fn len(&self) -> usize {
        self.exact.values().map(Vec::len).sum::<usize>() + self.wild.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wild.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spec_examples() {
        // MQTT 3.1.1, 4.7.1.2 and 4.7.1.3.
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "sport/tennis"));
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        // 4.7.2: `$` topics are not matched by leading wildcards.
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
    }

    #[test]
    fn add_replace_remove() {
        let mut s = Subscriptions::default();
        let a = Subscriber {
            slot: 0,
            conn_id: 1,
        };
        let b = Subscriber {
            slot: 1,
            conn_id: 2,
        };
        s.add("int/1/blocks", a, QoS::Level0);
        s.add("int/1/blocks", a, QoS::Level1);
        s.add("int/1/#", b, QoS::Level0);
        assert_eq!(s.len(), 2);
        let mut got = Vec::new();
        s.for_each_match("int/1/blocks", |w, q| got.push((w, q)));
        assert_eq!(got, vec![(a, QoS::Level1), (b, QoS::Level0)]);
        let hits = |s: &Subscriptions, t: &str| {
            let mut n = 0;
            s.for_each_match(t, |_, _| n += 1);
            n
        };
        assert_eq!(hits(&s, "int/1/tx"), 1);
        assert!(s.remove("int/1/#", b));
        assert!(!s.remove("int/1/#", b));
        assert_eq!(hits(&s, "int/1/tx"), 0);
        assert!(s.remove("int/1/blocks", a));
        assert!(s.is_empty());
    }

    proptest! {
        /// A filter without wildcards matches exactly its own topic, and
        /// `#` matches every topic not starting with `$`.
        #[test]
        fn literal_filters_match_only_themselves(t in "[a-z0-9/]{0,20}", u in "[a-z0-9/]{0,20}") {
            prop_assert!(matches(&t, &t));
            prop_assert_eq!(matches(&t, &u), t == u);
            prop_assert!(matches("#", &t));
        }

        /// Replacing any one level by `+` still matches.
        #[test]
        fn plus_matches_any_one_level(levels in proptest::collection::vec("[a-z0-9]{0,5}", 1..6), i in 0usize..6) {
            let topic = levels.join("/");
            let i = i % levels.len();
            let mut f = levels.clone();
            f[i] = "+".into();
            prop_assert!(matches(&f.join("/"), &topic));
            let mut g = levels[..i].to_vec();
            g.push("#".into());
            prop_assert!(matches(&g.join("/"), &topic));
        }
    }
}
