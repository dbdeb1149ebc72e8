//! Execution systems only: the block schedule of the ledger (debit stage per
//! sender, credit stage per receiver, fees) on a block of 10 000 random
//! transfers over 100 000 hot accounts, with the parallel executor and
//! queries (`ChainConfig.parallel = true`) and with the sequential
//! reference.
//!
//! The schedule is isolated through the engine's public world API, the way
//! `Chain::open` and `Chain::load` build it: a `World` with the per-block
//! resources, `block_schedule(parallel)` with `LedgerPlugin`, the accounts
//! spawned as entities with their `Outbox` / `Inbox` filled. Only
//! `Schedule::run` is timed: no LMDB, no state root, no sealing. Between
//! runs the nonces are reset and the outcomes emptied (untimed), so every
//! run executes the same 10 000 successful transfers.
//!
//! Run with `cargo bench -p int-bench --bench exec`; `-- --test` runs each
//! bench once as a smoke test.

use std::time::{Duration, Instant};

use bevy_ecs::prelude::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use int_engine::world::{
    AccountKey, Balances, BlockContext, BlockTxs, Call, DeviceProfile, ExecConfig, HotMeta, HotSet,
    Inbox, Nonce, Outbox, Outcomes, Plugin, TxCall, block_schedule, init_task_pools,
};
use int_schemas::wire::{Token, TxStatus};
use int_systems::LedgerPlugin;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ACCOUNTS: usize = 100_000;
const TXS: usize = 10_000;
const BALANCE: u128 = 1 << 100;

/// A world holding `ACCOUNTS` hot accounts and one block of `TXS` random
/// transfers, and the schedule that executes it.
struct Bench {
    world: World,
    schedule: Schedule,
}

impl Bench {
    fn new(parallel: bool) -> Self {
        init_task_pools();
        let mut world = World::new();
        world.insert_resource(ExecConfig { parallel });
        world.insert_resource(BlockTxs::default());
        world.insert_resource(Outcomes::default());
        let mut schedule = block_schedule(parallel);
        LedgerPlugin.build(&mut world, &mut schedule);

        let mut index =
            int_engine::KeyMap::with_capacity_and_hasher(ACCOUNTS + 1, Default::default());
        let entities: Vec<Entity> = (0..=ACCOUNTS)
            .map(|i| {
                let id = *blake3::hash(&(i as u64).to_le_bytes()).as_bytes();
                let e = world
                    .spawn((
                        AccountKey(id),
                        Balances {
                            int: BALANCE,
                            gas: BALANCE,
                        },
                        Nonce(0),
                        DeviceProfile {
                            public_key: Some([0x11; 96]),
                            ..Default::default()
                        },
                        HotMeta {
                            dirty: false,
                            stored: true,
                            last_touched: 0,
                            evicted: false,
                        },
                        Outbox::default(),
                        Inbox::default(),
                    ))
                    .id();
                index.insert(id, e);
                e
            })
            .collect();
        // The last entity is the proposer; senders and receivers are the
        // others.
        let proposer = entities[ACCOUNTS];
        let mut rng = StdRng::seed_from_u64(3);
        let mut nonces = vec![0u64; ACCOUNTS];
        let calls: Vec<TxCall> = (0..TXS)
            .map(|_| {
                let from = rng.gen_range(0..ACCOUNTS);
                let mut to = rng.gen_range(0..ACCOUNTS);
                if to == from {
                    to = (to + 1) % ACCOUNTS;
                }
                let nonce = nonces[from];
                nonces[from] += 1;
                TxCall {
                    sender: entities[from],
                    nonce,
                    fee: 1,
                    call: Call::Transfer {
                        to: entities[to],
                        amount: rng.gen_range(1..=100),
                        token: Token::Int,
                    },
                }
            })
            .collect();
        for (i, c) in calls.iter().enumerate() {
            if let Some(mut o) = world.get_mut::<Outbox>(c.sender) {
                o.0.push(i as u32);
            }
            if let Call::Transfer { to, .. } = c.call
                && let Some(mut inbox) = world.get_mut::<Inbox>(to)
            {
                inbox.0.push(i as u32);
            }
        }
        world.insert_resource(HotSet {
            index,
            capacity: ACCOUNTS * 2,
            free: Vec::new(),
        });
        world.insert_resource(BlockContext {
            chain_id: 1,
            height: 1,
            proposer,
        });
        world.resource_mut::<BlockTxs>().0 = calls;
        let mut b = Self { world, schedule };
        // First run: builds the executor's caches, and checks the block.
        b.run_once();
        let outcomes = b.world.resource::<Outcomes>();
        let ok = (0..TXS as u32)
            .filter(|&i| outcomes.get(i).is_some_and(|o| o.status == TxStatus::Ok))
            .count();
        assert_eq!(ok, TXS, "every transfer of the bench block succeeds");
        b
    }

    /// Resets what a run changes (untimed) and runs the schedule once;
    /// returns the time of the run alone.
    fn run_once(&mut self) -> Duration {
        for mut n in self.world.query::<&mut Nonce>().iter_mut(&mut self.world) {
            n.0 = 0;
        }
        self.world.insert_resource(Outcomes::new(TXS));
        let t = Instant::now();
        self.schedule.run(&mut self.world);
        t.elapsed()
    }
}

fn exec(c: &mut Criterion) {
    let mut g = c.benchmark_group("exec");
    g.throughput(Throughput::Elements(TXS as u64));
    g.sample_size(30);
    for parallel in [true, false] {
        let name = if parallel { "parallel" } else { "sequential" };
        let mut bench = Bench::new(parallel);
        g.bench_function(
            BenchmarkId::new(
                format!("schedule_{name}"),
                format!("{TXS}tx_{ACCOUNTS}accounts"),
            ),
            |b| b.iter_custom(|iters| (0..iters).map(|_| bench.run_once()).sum()),
        );
    }
    g.finish();
}

criterion_group!(exec_benches, exec);
criterion_main!(exec_benches);
