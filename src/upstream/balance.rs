//! Which instance a try goes to, by the upstream's `load_balancing`:
//! weighted round robin, least request (power of two random choices on
//! requests in flight, as Envoy does by default), or consistent hashing on a
//! key with bounded load.
//!
//! A `Picker` is built from the pool's instances whenever discovery changes
//! them, so choosing is a few loads and no allocation. Every strategy takes
//! a `usable` test (not tried yet, healthy, not ejected) and only returns an
//! instance that passes it; the caller relaxes the test when none does.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pingora::http::RequestHeader;
use pingora::lb::selection::{BackendIter, BackendSelection, Consistent};
use pingora::lb::Backend;

use super::instance::Instance;
use crate::config::{Balance, HashKey};
use crate::context::RequestCtx;
use crate::forwarded::IpText;
use crate::headers;
use crate::random::random;

/// An instance, and the backend Pingora's health checks know it by.
pub struct Member {
    pub backend: Backend,
    pub instance: Arc<Instance>,
}

pub struct Picker {
    members: Vec<Member>,
    /// Round-robin order: each member's index as often as its weight,
    /// interleaved (smooth weighted round robin, as NGINX does).
    order: Box<[u32]>,
    next: AtomicUsize,
    /// For consistent hashing: the ring, weighted.
    ring: Option<Arc<Consistent>>,
}

/// An instance takes at most this much more than its share of the requests
/// in flight before its keys spill to the next on the ring ("consistent
/// hashing with bounded loads")...
const HASH_LOAD_FACTOR: f64 = 1.25;
/// ...and at least this many, so that at low load (where one request more
/// is a large share) keys stay where they hash.
const HASH_MIN_LOAD: u32 = 4;

impl Picker {
    /// Backends carry their `Arc<Instance>` in `ext`.
    pub fn build(backends: &BTreeSet<Backend>, balance: &Balance) -> Self {
        let members: Vec<Member> = backends
            .iter()
            .filter_map(|b| {
                let instance = b.ext.get::<Arc<Instance>>()?.clone();
                Some(Member {
                    backend: b.clone(),
                    instance,
                })
            })
            .collect();
        let weights: Vec<u32> = members.iter().map(|m| m.instance.weight()).collect();
        Picker {
            order: smooth_order(&weights),
            next: AtomicUsize::new(0),
            ring: matches!(balance, Balance::ConsistentHash(_))
                .then(|| Arc::new(Consistent::build(backends))),
            members,
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member for a try; `key` is the request's hash key, when the
    /// upstream hashes and the request has one. A retry (`first: false`)
    /// does not move round robin on: if it did, every request of a
    /// two-instance pool that needs one retry would start on the same
    /// instance.
    pub fn pick(
        &self,
        balance: &Balance,
        key: Option<&[u8]>,
        first: bool,
        usable: &dyn Fn(&Member) -> bool,
    ) -> Option<&Member> {
        match (balance, key, &self.ring) {
            (Balance::LeastRequest, _, _) => self.least_request(usable),
            (Balance::ConsistentHash(_), Some(key), Some(ring)) => self.hashed(ring, key, usable),
            _ => self.round_robin(first, usable),
        }
    }

    fn round_robin(&self, first: bool, usable: &dyn Fn(&Member) -> bool) -> Option<&Member> {
        let len = self.order.len();
        let start = if first {
            self.next.fetch_add(1, Ordering::Relaxed)
        } else {
            self.next.load(Ordering::Relaxed)
        };
        (0..len)
            .map(|k| &self.members[self.order[(start + k) % len] as usize])
            .find(|m| usable(m))
    }

    /// Of two usable members picked at random, the one with fewer requests
    /// in flight for its weight.
    fn least_request(&self, usable: &dyn Fn(&Member) -> bool) -> Option<&Member> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let a = random() as usize % n;
        let b = if n > 1 {
            (a + 1 + random() as usize % (n - 1)) % n
        } else {
            a
        };
        let (a, b) = (&self.members[a], &self.members[b]);
        match (usable(a), usable(b)) {
            (true, true) => Some(if busier(a, b) { b } else { a }),
            (true, false) => Some(a),
            (false, true) => Some(b),
            // Both drawn were not usable: the least busy usable one.
            (false, false) => self.members.iter().filter(|m| usable(m)).reduce(|best, m| {
                if busier(best, m) {
                    m
                } else {
                    best
                }
            }),
        }
    }

    /// The first usable member on the ring from `key` that is not over its
    /// bounded share of the load; else the first usable one.
    fn hashed(
        &self,
        ring: &Arc<Consistent>,
        key: &[u8],
        usable: &dyn Fn(&Member) -> bool,
    ) -> Option<&Member> {
        let n = self.members.len();
        let total: u32 = self.members.iter().map(|m| m.instance.in_flight()).sum();
        let share = (HASH_LOAD_FACTOR * f64::from(total + 1) / n.max(1) as f64).ceil() as u32;
        let bound = share.max(HASH_MIN_LOAD);
        let mut nodes = ring.iter(key);
        let mut fallback = None;
        // Each instance sits on the ring many times: a few rounds' worth of
        // steps meets every one.
        for _ in 0..n * 8 {
            let Some(backend) = nodes.next() else { break };
            let Some(member) = self.members.iter().find(|m| m.backend.addr == backend.addr) else {
                continue;
            };
            if !usable(member) {
                continue;
            }
            if member.instance.in_flight() < bound {
                return Some(member);
            }
            fallback.get_or_insert(member);
        }
        fallback
    }
}

/// What a request hashes on, for an upstream balanced by `consistent_hash`;
/// `None` when the request has no such key (it goes round robin).
pub fn request_key<'r>(
    balance: &Balance,
    req: &'r RequestHeader,
    ctx: &'r RequestCtx,
) -> Option<Cow<'r, [u8]>> {
    let Balance::ConsistentHash(key) = balance else {
        return None;
    };
    match key {
        HashKey::Header(name) => req.headers.get(name).map(|v| Cow::Borrowed(v.as_bytes())),
        HashKey::Cookie(name) => headers::cookie(req, name).map(|v| Cow::Borrowed(v.as_bytes())),
        HashKey::ClientIp => ctx
            .client_ip
            .map(|ip| Cow::Owned(IpText::new(ip).as_str().as_bytes().to_vec())),
        HashKey::Claim(name) => match ctx.claims.as_ref()?.get(name)? {
            serde_json::Value::String(s) => Some(Cow::Owned(s.clone().into_bytes())),
            serde_json::Value::Null => None,
            other => Some(Cow::Owned(other.to_string().into_bytes())),
        },
    }
    .filter(|k| !k.is_empty())
}

/// Whether `a` has more requests in flight than `b`, each for its weight.
fn busier(a: &Member, b: &Member) -> bool {
    u64::from(a.instance.in_flight()) * u64::from(b.instance.weight())
        > u64::from(b.instance.in_flight()) * u64::from(a.instance.weight())
}

/// Indices into `weights` in smooth weighted round-robin order: each index
/// as often as its weight (divided by their common divisor), spread out
/// rather than in runs.
fn smooth_order(weights: &[u32]) -> Box<[u32]> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<i64> = weights.iter().map(|w| i64::from(w / divisor)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
                .expect("weights are not empty when total > 0");
            current[best] -= total;
            best as u32
        })
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HashKey, InstanceUrl};
    use crate::upstream::instance::InFlight;
    use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;

    fn picker(weights: &[u16], balance: &Balance) -> Picker {
        let backends: BTreeSet<Backend> = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| {
                let addr: std::net::SocketAddr = format!("127.0.0.1:{}", 4000 + i).parse().unwrap();
                let mut url = InstanceUrl::parse(&format!("http://{addr}")).unwrap();
                url.weight = weight;
                let mut backend = Backend {
                    addr: PingoraAddr::Inet(addr),
                    weight: usize::from(weight),
                    ext: Default::default(),
                };
                backend
                    .ext
                    .insert(Arc::new(Instance::new(addr, Arc::new(url), None)));
                backend
            })
            .collect();
        Picker::build(&backends, balance)
    }

    fn port(m: &Member) -> u16 {
        m.instance.addr.port()
    }

    #[test]
    fn round_robin_follows_weights_interleaved() {
        let p = picker(&[3, 1], &Balance::RoundRobin);
        let seen: Vec<u16> = (0..8)
            .map(|_| port(p.pick(&Balance::RoundRobin, None, true, &|_| true).unwrap()))
            .collect();
        assert_eq!(seen, [4000, 4000, 4001, 4000, 4000, 4000, 4001, 4000]);
        assert_eq!(smooth_order(&[2, 4]).as_ref(), [1, 0, 1]);
    }

    #[test]
    fn strategies_only_return_usable_members() {
        for balance in [
            Balance::RoundRobin,
            Balance::LeastRequest,
            Balance::ConsistentHash(HashKey::ClientIp),
        ] {
            let p = picker(&[1, 1, 1], &balance);
            for _ in 0..50 {
                let m = p
                    .pick(&balance, Some(b"cart-7"), true, &|m| port(m) == 4002)
                    .unwrap();
                assert_eq!(port(m), 4002, "{balance:?}");
            }
            assert!(p.pick(&balance, Some(b"k"), true, &|_| false).is_none());
        }
    }

    #[test]
    fn least_request_prefers_the_idle_member() {
        let p = picker(&[1, 1], &Balance::LeastRequest);
        let busy: Vec<InFlight> = (0..5)
            .map(|_| InFlight::start(p.members()[0].instance.clone()))
            .collect();
        for _ in 0..20 {
            assert_eq!(
                port(
                    p.pick(&Balance::LeastRequest, None, true, &|_| true)
                        .unwrap()
                ),
                4001
            );
        }
        drop(busy);
    }

    #[test]
    fn a_key_keeps_its_member_and_spills_only_when_overloaded() {
        let balance = Balance::ConsistentHash(HashKey::ClientIp);
        let p = picker(&[1, 1, 1, 1], &balance);
        let home = port(p.pick(&balance, Some(b"cart-42"), true, &|_| true).unwrap());
        for _ in 0..100 {
            assert_eq!(
                port(p.pick(&balance, Some(b"cart-42"), true, &|_| true).unwrap()),
                home
            );
        }
        let member = p.members().iter().find(|m| port(m) == home).unwrap();
        let load: Vec<InFlight> = (0..10)
            .map(|_| InFlight::start(member.instance.clone()))
            .collect();
        assert_ne!(
            port(p.pick(&balance, Some(b"cart-42"), true, &|_| true).unwrap()),
            home
        );
        drop(load);
    }
}
