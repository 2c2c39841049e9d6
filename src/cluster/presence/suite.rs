//! The one test suite of [`Presence`], run against [`MemoryPresence`] and against
//! [`RedisPresence`] on a `redis-server` of the test's own: both must answer alike.

#[path = "../../../tests/common/redis.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use super::{Announce, Change, Key, Members, MemoryPresence, Presence, RedisPresence};
use crate::router::Listing;

const LONG: Duration = Duration::from_secs(60);

fn user(name: &str, n: usize) -> (Key, usize) {
    (Key::User(name.into()), n)
}

fn member(group: &str, name: &str, n: usize) -> (Key, usize) {
    (
        Key::Member {
            group: group.into(),
            name: name.into(),
        },
        n,
    )
}

fn anonymous(group: &str, n: usize) -> (Key, usize) {
    (Key::Anonymous(group.into()), n)
}

fn join(group: &str, name: &str) -> Announce {
    Announce::new(group, Change::Join, name)
}

fn leave(group: &str, name: &str) -> Announce {
    Announce::new(group, Change::Leave, name)
}

fn listing(entries: &[(&str, usize)], count: usize, next: Option<&str>) -> Listing {
    Listing {
        entries: entries.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
        count,
        next: next.map(str::to_owned),
    }
}

async fn apply(p: &mut impl Presence, node: &str, counts: &[(Key, usize)]) -> Vec<Announce> {
    let mut events = p
        .apply(node, counts)
        .await
        .expect("the store answers")
        .expect("the node is registered");
    events.sort();
    events
}

async fn counts_add_up_across_nodes_and_events_are_cluster_wide(mut p: impl Presence) {
    assert!(!p.heartbeat("n1", LONG).await.unwrap(), "new");
    assert!(p.heartbeat("n1", LONG).await.unwrap(), "known");
    assert!(!p.heartbeat("n2", LONG).await.unwrap());

    let first = [user("Zoë smith", 1), member("room", "Zoë smith", 1)];
    assert_eq!(
        apply(&mut p, "n1", &first).await,
        [join("room", "Zoë smith")]
    );
    assert_eq!(
        apply(&mut p, "n1", &first).await,
        [],
        "the same counts again"
    );
    let on_n2 = [user("Zoë smith", 2), member("room", "Zoë smith", 2)];
    assert_eq!(
        apply(&mut p, "n2", &on_n2).await,
        [],
        "not the first session"
    );
    assert_eq!(
        p.users(None, None, 10).await.unwrap(),
        listing(&[("Zoë smith", 3)], 1, None)
    );
    assert_eq!(
        p.members("room", None, 10).await.unwrap(),
        Members {
            listing: listing(&[("Zoë smith", 3)], 1, None),
            users: 1
        }
    );
    assert_eq!(
        p.user("Zoë smith").await.unwrap(),
        Some((3, vec!["room".to_owned()]))
    );

    // Gone from n1: still on n2, no event; gone from n2: the cluster's leave.
    let gone = [user("Zoë smith", 0), member("room", "Zoë smith", 0)];
    assert_eq!(apply(&mut p, "n1", &gone).await, []);
    assert_eq!(
        p.user("Zoë smith").await.unwrap(),
        Some((2, vec!["room".to_owned()]))
    );
    assert_eq!(
        apply(&mut p, "n2", &gone).await,
        [leave("room", "Zoë smith")]
    );
    assert_eq!(p.user("Zoë smith").await.unwrap(), None);
    assert_eq!(
        p.users(None, None, 10).await.unwrap(),
        listing(&[], 0, None)
    );
    assert_eq!(
        p.members("room", None, 10).await.unwrap(),
        Members::default()
    );
    assert_eq!(p.groups(None, 10).await.unwrap(), listing(&[], 0, None));

    // A node that is not registered writes nothing.
    assert_eq!(p.apply("n3", &first).await.unwrap(), None);
    assert_eq!(p.users(None, None, 10).await.unwrap().count, 0);
}

async fn listings_page_by_name_and_count_the_whole_cluster(mut p: impl Presence) {
    p.heartbeat("n1", LONG).await.unwrap();
    p.heartbeat("n2", LONG).await.unwrap();
    let mut on_n1 = Vec::new();
    for name in ["a1", "a2", "a3", "b 1", "张三"] {
        on_n1.push(user(name, 1));
        on_n1.push(member("big", name, 1));
    }
    on_n1.push(member("small", "a1", 1));
    on_n1.push(anonymous("stock", 2));
    apply(&mut p, "n1", &on_n1).await;
    let on_n2 = [
        user("a4", 1),
        member("small", "a4", 1),
        member("mid", "a4", 1),
        anonymous("stock", 1),
        anonymous("mid", 1),
    ];
    apply(&mut p, "n2", &on_n2).await;

    let page = p.users(None, None, 2).await.unwrap();
    assert_eq!(page, listing(&[("a1", 1), ("a2", 1)], 6, Some("a2")));
    let page = p.users(None, Some("a2"), 3).await.unwrap();
    assert_eq!(
        page,
        listing(&[("a3", 1), ("a4", 1), ("b 1", 1)], 6, Some("b 1"))
    );
    let page = p.users(None, Some("b 1"), 3).await.unwrap();
    assert_eq!(page, listing(&[("张三", 1)], 6, None));
    let page = p.users(Some("a"), Some("a1"), 2).await.unwrap();
    assert_eq!(page, listing(&[("a2", 1), ("a3", 1)], 6, Some("a3")));
    let page = p.users(Some("a"), Some("a3"), 2).await.unwrap();
    assert_eq!(page, listing(&[("a4", 1)], 6, None));
    let page = p.users(Some("张"), None, 5).await.unwrap();
    assert_eq!(page, listing(&[("张三", 1)], 6, None));

    let m = p.members("big", Some("a3"), 1).await.unwrap();
    assert_eq!(
        m,
        Members {
            listing: listing(&[("b 1", 1)], 5, Some("b 1")),
            users: 5
        }
    );
    // A count without names (a group whose names are not listed).
    let m = p.members("mid", None, 0).await.unwrap();
    assert_eq!(
        m,
        Members {
            listing: listing(&[], 2, None),
            users: 1
        }
    );
    let m = p.members("stock", None, 10).await.unwrap();
    assert_eq!(m.listing, listing(&[], 3, None), "anonymous sessions count");

    let groups = p.groups(None, 3).await.unwrap();
    assert_eq!(
        groups,
        listing(&[("big", 5), ("mid", 2), ("small", 2)], 4, Some("small"))
    );
    let groups = p.groups(Some("small"), 3).await.unwrap();
    assert_eq!(groups, listing(&[("stock", 3)], 4, None));
    let top = p.top_groups(3).await.unwrap();
    assert_eq!(
        top,
        listing(&[("big", 5), ("stock", 3), ("mid", 2)], 4, None)
    );
    assert_eq!(
        p.user("a4").await.unwrap(),
        Some((1, vec!["mid".to_owned(), "small".to_owned()]))
    );
    assert_eq!(p.user("nobody").await.unwrap(), None);
}

async fn a_dead_node_is_swept_with_leave_for_the_names_that_left_with_it(mut p: impl Presence) {
    p.heartbeat("dying", Duration::from_millis(300))
        .await
        .unwrap();
    p.heartbeat("alive", LONG).await.unwrap();
    let on_dying = [
        user("bob", 1),
        member("room", "bob", 1),
        user("carol", 1),
        member("room", "carol", 1),
        anonymous("stock", 1),
    ];
    apply(&mut p, "dying", &on_dying).await;
    apply(
        &mut p,
        "alive",
        &[user("carol", 1), member("room", "carol", 1)],
    )
    .await;

    // Not a sleep: sweeps until the node's registration has expired.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (nodes, mut events) = loop {
        let (nodes, events) = p.sweep().await.unwrap();
        if !nodes.is_empty() {
            break (nodes, events);
        }
        assert!(Instant::now() < deadline, "the node never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    events.sort();
    assert_eq!(nodes, ["dying"]);
    assert_eq!(
        events,
        [leave("room", "bob")],
        "carol is still on another node"
    );
    assert_eq!(p.sweep().await.unwrap(), (vec![], vec![]), "swept once");
    assert_eq!(
        p.users(None, None, 10).await.unwrap(),
        listing(&[("carol", 1)], 1, None)
    );
    assert_eq!(
        p.groups(None, 10).await.unwrap(),
        listing(&[("room", 1)], 1, None)
    );

    // The node comes back: it is told it lapsed, and writes everything again.
    assert_eq!(p.apply("dying", &on_dying).await.unwrap(), None);
    assert!(!p.heartbeat("dying", LONG).await.unwrap());
    assert_eq!(
        apply(&mut p, "dying", &on_dying).await,
        [join("room", "bob")]
    );
    assert_eq!(p.users(None, None, 10).await.unwrap().count, 2);

    // A clean shutdown removes it at once.
    assert_eq!(p.remove("dying").await.unwrap(), [leave("room", "bob")]);
    assert_eq!(p.users(None, None, 10).await.unwrap().count, 1);
    assert!(!p.heartbeat("dying", LONG).await.unwrap());
}

/// The suite's cases as tests, for one store: `$fresh` gives (whatever must live as long
/// as the store, a fresh store).
macro_rules! suite {
    ($store:ident, $fresh:expr) => {
        mod $store {
            use super::*;

            #[tokio::test]
            async fn counts_add_up_across_nodes_and_events_are_cluster_wide() {
                let (_keep, store) = $fresh;
                super::counts_add_up_across_nodes_and_events_are_cluster_wide(store).await;
            }

            #[tokio::test]
            async fn listings_page_by_name_and_count_the_whole_cluster() {
                let (_keep, store) = $fresh;
                super::listings_page_by_name_and_count_the_whole_cluster(store).await;
            }

            #[tokio::test]
            async fn a_dead_node_is_swept_with_leave_for_the_names_that_left_with_it() {
                let (_keep, store) = $fresh;
                super::a_dead_node_is_swept_with_leave_for_the_names_that_left_with_it(store).await;
            }
        }
    };
}

suite!(memory, ((), MemoryPresence::new()));

suite!(redis, {
    let server = redis_server::RedisServer::start();
    let client = ::redis::Client::open(server.url()).expect("a Redis URL");
    (server, RedisPresence::new(client, "suite"))
});

/// What a Redis presence writes can be read back by another node's store on the same
/// Redis, and a sweep removes a dead node only once whoever runs it.
#[tokio::test]
async fn two_redis_stores_share_the_cluster_and_one_sweeper_wins() {
    let server = redis_server::RedisServer::start();
    let open = || RedisPresence::new(::redis::Client::open(server.url()).unwrap(), "wx");
    let (mut a, mut b) = (open(), open());
    a.heartbeat("a", Duration::from_millis(200)).await.unwrap();
    b.heartbeat("b", LONG).await.unwrap();
    apply(&mut a, "a", &[user("ann", 1), member("room", "ann", 1)]).await;
    assert_eq!(
        b.members("room", None, 10).await.unwrap().listing,
        listing(&[("ann", 1)], 1, None)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut swept = Vec::new();
    while swept.is_empty() {
        assert!(Instant::now() < deadline, "never swept");
        let (ra, rb) = tokio::join!(a.sweep(), b.sweep());
        for (nodes, events) in [ra.unwrap(), rb.unwrap()] {
            if !nodes.is_empty() {
                swept.push((nodes, events));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        swept,
        [(vec!["a".to_owned()], vec![leave("room", "ann")])],
        "one sweeper"
    );
    // Keys carry the prefix: nothing else was written.
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("*")
        .query(&mut server.connect())
        .unwrap();
    assert!(keys.iter().all(|k| k.starts_with("wx:p:")), "{keys:?}");
}
