//! Cluster membership as a state machine: no I/O, no clock of its own.
//!
//! The coordinator's server feeds it events (a worker registered, a heartbeat arrived, a
//! bring-up finished, a connection closed) with the time they happened, and calls
//! [`Membership::tick`] with the time now; it answers with [`Action`]s for the server to carry
//! out (connect to a worker and give it its part of the plan). Everything about who is healthy,
//! when a silent worker counts as down and which registration wins is decided here, so it is
//! tested on a virtual clock without a network (the style of quinn-proto and raft-rs's
//! `RawNode`).
//!
//! A worker's life: `register` (not healthy; a bring-up starts) → `brought_up` (healthy, holds
//! the active plan) → silent for `dead_after`, its connection closed, or suspected by a failed
//! request → down → a heartbeat from it starts another bring-up. A worker that registers again
//! at the same address (a restart) keeps its id; its registration generation goes up, so that
//! a bring-up begun for the old process cannot mark the new one healthy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use embtune_protocol::wire::{ClientTraffic, CoreCounters, DeployProgressInfo, Heartbeat, RouteWorker, WorkerHello};

/// How many `dead_after`s a stored deployment's worker is presumed healthy before it registers.
pub const PRESUMED_FOR: u32 = 5;

/// What the server must do for the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Connect to worker `id` and give it its part of the active plan unless it already holds
    /// plan `holds`; then report [`Membership::brought_up`] (or [`Membership::bring_up_ended`]
    /// on failure) with this `generation`.
    BringUp { id: u16, generation: u64, holds: u64 },
}

/// Why a worker was marked down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownReason {
    Silent,
    ConnectionClosed,
    Suspected,
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DownReason::Silent => "no heartbeat",
            DownReason::ConnectionClosed => "connection closed",
            DownReason::Suspected => "a request to it failed",
        })
    }
}

/// One registered worker.
#[derive(Clone, Debug)]
pub struct Member {
    pub id: u16,
    pub hello: WorkerHello,
    pub addr: SocketAddr,
    /// Connected, heartbeating and holding the active plan.
    pub healthy: bool,
    /// A bring-up is under way, so heartbeats do not start another.
    pub bringing_up: bool,
    /// Known from a stored deployment and not yet registered: the routing table lists it as
    /// healthy for a grace period, because clients serving from it must not stop while a
    /// restarted coordinator waits for its workers to register again.
    pub presumed: bool,
    /// Bumped on every registration.
    pub generation: u64,
    /// The plan it holds, as far as the coordinator knows.
    pub deployed_plan: u64,
    pub last_seen: Instant,
    pub queue: u32,
    pub counters: Vec<CoreCounters>,
    pub clients: Vec<ClientTraffic>,
    pub bytes_held: u64,
    /// The deployment it reported in progress at its last heartbeat.
    pub deploying: Option<DeployProgressInfo>,
}

/// The registered workers, in id order (ids are positions and are never reused).
#[derive(Clone, Debug)]
pub struct Membership {
    dead_after: Duration,
    members: Vec<Member>,
    /// Bumped whenever a worker's health changes: the routing table's generation.
    generation: u64,
}

impl Membership {
    /// Workers silent for `dead_after` count as down.
    pub fn new(dead_after: Duration) -> Membership {
        Membership { dead_after, members: Vec::new(), generation: 0 }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn get(&self, id: u16) -> Option<&Member> {
        self.members.get(id as usize)
    }

    /// The routing table's generation: it changes whenever any worker's health does.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn set_healthy(&mut self, id: u16, healthy: bool) {
        let m = &mut self.members[id as usize];
        if m.healthy != healthy {
            m.healthy = healthy;
            self.generation += 1;
        }
    }

    /// A worker known from a stored deployment, not yet registered: it keeps its plan position
    /// (the id returned) when it registers at `addr`.
    pub fn expect(&mut self, hello: WorkerHello, addr: SocketAddr, now: Instant) -> u16 {
        if let Some(i) = self.members.iter().position(|m| m.addr == addr) {
            return i as u16;
        }
        let id = self.members.len() as u16;
        self.members.push(Member {
            id,
            hello,
            addr,
            healthy: false,
            bringing_up: false,
            presumed: true,
            generation: 0,
            deployed_plan: 0,
            last_seen: now,
            queue: 0,
            counters: Vec::new(),
            clients: Vec::new(),
            deploying: None,
            bytes_held: 0,
        });
        id
    }

    /// A worker registers (or registers again, after a restart, at the same address). It is
    /// not healthy until its bring-up reports back.
    pub fn register(&mut self, hello: WorkerHello, addr: SocketAddr, now: Instant) -> (u16, Action) {
        let id = self.expect(hello.clone(), addr, now);
        self.set_healthy(id, false);
        let m = &mut self.members[id as usize];
        if m.presumed {
            m.presumed = false;
            self.generation += 1;
        }
        let m = &mut self.members[id as usize];
        let holds = hello.holds;
        m.hello = hello;
        m.generation += 1;
        m.bringing_up = true;
        m.deployed_plan = 0;
        m.last_seen = now;
        // A new process: its counters start again from zero.
        m.counters.clear();
        m.clients.clear();
        m.deploying = None;
        m.queue = 0;
        (id, Action::BringUp { id, generation: m.generation, holds })
    }

    /// A heartbeat. A worker that is down but heartbeating again gets another bring-up: a stall
    /// (a loaded machine, a paused VM) must not take a live worker out for good.
    pub fn heartbeat(&mut self, hb: Heartbeat, now: Instant) -> Option<Action> {
        let m = self.members.get_mut(hb.worker as usize)?;
        m.last_seen = now;
        m.queue = hb.queue;
        m.counters = hb.cores;
        m.clients = hb.clients;
        m.deploying = hb.deploying;
        if m.healthy || m.bringing_up {
            return None;
        }
        m.bringing_up = true;
        Some(Action::BringUp { id: m.id, generation: m.generation, holds: hb.plan_id })
    }

    /// A bring-up succeeded: the worker is connected and holds `plan`. False when the worker
    /// registered again meanwhile, whose own bring-up then wins.
    pub fn brought_up(&mut self, id: u16, generation: u64, plan: u64, now: Instant) -> bool {
        let Some(m) = self.members.get_mut(id as usize) else { return false };
        if m.generation != generation {
            return false;
        }
        m.deployed_plan = plan;
        m.last_seen = now;
        m.bringing_up = false;
        self.set_healthy(id, true);
        true
    }

    /// A bring-up ended without success: heartbeats may start another.
    pub fn bring_up_ended(&mut self, id: u16, generation: u64) {
        if let Some(m) = self.members.get_mut(id as usize)
            && m.generation == generation
        {
            m.bringing_up = false;
        }
    }

    /// A request to the worker failed: it is down until a heartbeat brings it back.
    pub fn suspect(&mut self, id: u16) -> Option<DownReason> {
        self.down(id, DownReason::Suspected)
    }

    /// The coordinator's connection to the worker closed.
    pub fn connection_closed(&mut self, id: u16) -> Option<DownReason> {
        self.down(id, DownReason::ConnectionClosed)
    }

    fn down(&mut self, id: u16, why: DownReason) -> Option<DownReason> {
        let healthy = self.members.get(id as usize)?.healthy;
        self.set_healthy(id, false);
        healthy.then_some(why)
    }

    /// Marks down every healthy worker silent for longer than `dead_after` at `now`, and stops
    /// presuming healthy a stored deployment's worker that has not registered within
    /// [`PRESUMED_FOR`] `dead_after`s.
    pub fn tick(&mut self, now: Instant) -> Vec<(u16, DownReason)> {
        let grace = self.dead_after * PRESUMED_FOR;
        let mut lapsed = false;
        for m in self.members.iter_mut().filter(|m| m.presumed) {
            if now.saturating_duration_since(m.last_seen) > grace {
                m.presumed = false;
                lapsed = true;
            }
        }
        if lapsed {
            self.generation += 1;
        }
        let silent: Vec<u16> = self
            .members
            .iter()
            .filter(|m| m.healthy && now.saturating_duration_since(m.last_seen) > self.dead_after)
            .map(|m| m.id)
            .collect();
        silent.into_iter().filter_map(|id| self.down(id, DownReason::Silent).map(|r| (id, r))).collect()
    }

    /// A deployment of `plan` reached worker `id`.
    pub fn deployed(&mut self, id: u16, plan: u64, bytes: u64) {
        if let Some(m) = self.members.get_mut(id as usize) {
            m.deployed_plan = plan;
            m.bytes_held = bytes;
        }
    }

    /// The healthy workers, in id order.
    pub fn healthy(&self) -> Vec<u16> {
        self.members.iter().filter(|m| m.healthy).map(|m| m.id).collect()
    }

    /// The routing table's workers for a plan played by `slots` (registered ids by plan
    /// position).
    pub fn route_workers(&self, slots: &[u16]) -> Vec<RouteWorker> {
        slots
            .iter()
            .map(|&id| {
                let m = &self.members[id as usize];
                RouteWorker { id, addr: m.addr.to_string(), healthy: m.healthy || m.presumed, queue: m.queue }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(listen: &str) -> WorkerHello {
        WorkerHello {
            name: listen.into(),
            listen: listen.into(),
            cores: 1,
            memory_bytes: 1 << 30,
            l2_bytes: 1 << 20,
            llc_bytes: 32 << 20,
            llc_cores: 2,
            huge_pages: false,
            cpu_model: String::new(),
            calibration: None,
            gpu: None,
            holds: 0,
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn hb(worker: u16, plan_id: u64) -> Heartbeat {
        Heartbeat { worker, queue: 3, plan_id, ..Default::default() }
    }

    /// A worker registered and brought up at `t0`.
    fn up(m: &mut Membership, port: u16, t0: Instant) -> u16 {
        let (id, Action::BringUp { generation, .. }) = m.register(hello("w"), addr(port), t0);
        assert!(m.brought_up(id, generation, 7, t0));
        id
    }

    #[test]
    fn a_registered_worker_serves_only_once_brought_up() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(1));
        let (id, action) = m.register(hello("a"), addr(1), t0);
        assert_eq!(action, Action::BringUp { id: 0, generation: 1, holds: 0 });
        assert!(m.healthy().is_empty());
        let g = m.generation();
        assert!(m.brought_up(id, 1, 7, t0));
        assert_eq!(m.healthy(), vec![0]);
        assert!(m.generation() > g, "health changes bump the routing generation");
        assert_eq!(m.get(0).unwrap().deployed_plan, 7);
    }

    #[test]
    fn silence_marks_a_worker_down_and_heartbeats_bring_it_back() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(1));
        let id = up(&mut m, 1, t0);
        // Heartbeats keep it up on the virtual clock.
        for k in 1..=5 {
            let now = t0 + Duration::from_millis(500 * k);
            assert_eq!(m.heartbeat(hb(id, 7), now), None);
            assert!(m.tick(now).is_empty());
        }
        let last = t0 + Duration::from_millis(2500);
        assert!(m.tick(last + Duration::from_millis(999)).is_empty(), "not yet past dead_after");
        assert_eq!(m.tick(last + Duration::from_millis(1001)), vec![(id, DownReason::Silent)]);
        assert!(m.tick(last + Duration::from_secs(5)).is_empty(), "down once, reported once");
        assert!(m.healthy().is_empty());
        // It heartbeats again: one bring-up, carrying the plan it says it holds.
        let now = last + Duration::from_secs(6);
        let a = m.heartbeat(hb(id, 7), now).expect("a bring-up");
        assert_eq!(a, Action::BringUp { id, generation: 1, holds: 7 });
        assert_eq!(m.heartbeat(hb(id, 7), now), None, "one bring-up at a time");
        assert!(m.brought_up(id, 1, 7, now));
        assert_eq!(m.healthy(), vec![id]);
    }

    #[test]
    fn re_registration_at_the_same_address_keeps_the_id_and_wins_over_an_old_bring_up() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(1));
        let (id, Action::BringUp { generation: old, .. }) = m.register(hello("a"), addr(1), t0);
        let (other, _) = m.register(hello("b"), addr(2), t0);
        assert_eq!((id, other), (0, 1));
        // The process restarts before its first bring-up finished.
        let (again, Action::BringUp { generation: new, holds, .. }) = m.register(hello("a2"), addr(1), t0);
        assert_eq!((again, holds), (0, 0));
        assert!(new > old);
        assert!(!m.brought_up(id, old, 7, t0), "the old process's bring-up lost");
        m.bring_up_ended(id, old);
        assert!(m.get(id).unwrap().bringing_up, "the new bring-up still runs");
        assert!(m.brought_up(id, new, 7, t0));
        assert_eq!(m.get(id).unwrap().hello.name, "a2");
        assert_eq!(m.members().len(), 2);
    }

    #[test]
    fn a_worker_of_a_stored_deployment_keeps_its_position_and_says_what_it_holds() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(1));
        // A restarted coordinator expects the stored deployment's workers, in plan order.
        assert_eq!(m.expect(hello("x"), addr(9), t0), 0);
        assert_eq!(m.expect(hello("y"), addr(8), t0), 1);
        assert!(m.healthy().is_empty(), "expected, not yet registered");
        // Clients serving from the deployment go on meanwhile: the routing table presumes
        // them healthy.
        assert!(m.route_workers(&[0, 1]).iter().all(|w| w.healthy));
        // The second registers first; it is still position 1, and it holds plan 7.
        let mut h = hello("y");
        h.holds = 7;
        let (id, a) = m.register(h, addr(8), t0);
        assert_eq!((id, a), (1, Action::BringUp { id: 1, generation: 1, holds: 7 }));
        assert!(!m.route_workers(&[0, 1])[1].healthy, "registered: healthy once brought up");
        assert!(m.brought_up(1, 1, 7, t0));
        // The first never comes back: after the grace period the table says so.
        let g = m.generation();
        m.heartbeat(hb(1, 7), t0 + Duration::from_millis(3500));
        assert!(m.tick(t0 + Duration::from_secs(4)).is_empty());
        assert!(m.route_workers(&[0, 1])[0].healthy, "still within the grace period");
        m.heartbeat(hb(1, 7), t0 + Duration::from_secs(5));
        m.tick(t0 + Duration::from_millis(5100));
        assert!(!m.route_workers(&[0, 1])[0].healthy);
        assert!(m.generation() > g);
        assert_eq!(m.healthy(), vec![1], "only registered workers take deployments");
    }

    #[test]
    fn a_failed_bring_up_lets_heartbeats_try_again() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(1));
        let (id, Action::BringUp { generation, .. }) = m.register(hello("a"), addr(1), t0);
        assert_eq!(m.heartbeat(hb(id, 0), t0), None, "a bring-up is under way");
        m.bring_up_ended(id, generation);
        assert!(matches!(m.heartbeat(hb(id, 0), t0), Some(Action::BringUp { .. })));
    }

    #[test]
    fn closed_connections_and_suspicion_take_a_worker_down_at_once() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(60));
        let a = up(&mut m, 1, t0);
        let b = up(&mut m, 2, t0);
        assert_eq!(m.connection_closed(a), Some(DownReason::ConnectionClosed));
        assert_eq!(m.connection_closed(a), None, "already down");
        assert_eq!(m.suspect(b), Some(DownReason::Suspected));
        assert!(m.healthy().is_empty());
        assert_eq!(m.suspect(9), None, "unknown ids are ignored");
    }

    #[test]
    fn the_routing_table_lists_workers_by_plan_position() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(1));
        up(&mut m, 1, t0);
        up(&mut m, 2, t0);
        up(&mut m, 3, t0);
        m.suspect(1);
        // A plan made while worker 1 was away: positions 0 and 1 are workers 0 and 2.
        let r = m.route_workers(&[0, 2]);
        assert_eq!(r.iter().map(|w| w.id).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(r[1].addr, "127.0.0.1:3");
        assert!(r.iter().all(|w| w.healthy));
        m.heartbeat(hb(2, 7), t0);
        assert_eq!(m.route_workers(&[0, 2])[1].queue, 3);
    }
}
