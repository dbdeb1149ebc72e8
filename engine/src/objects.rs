//! The block's plugin objects: one read-your-writes overlay over the parent
//! snapshot, and the effects each plugin hands back to the chain.
//!
//! Execution never writes the store. A plugin that decides a block's
//! payloads reads its objects from the parent snapshot ([`ParentState`])
//! and keeps what it changes in an [`Overlay`]: a later read in the same
//! block sees the earlier write, a scan merges the block's writes over the
//! committed keys, and at the end the overlay becomes the block's object
//! writes, one per key, in key order. Work split across threads (the
//! market's SKU groups) gives each part its own overlay over disjoint keys
//! and [`Overlay::absorb`]s them in a fixed order, so the result equals the
//! sequential run.
//!
//! Each plugin writes its effects (object writes, credits, supply delta, a
//! fault) to its own [`PluginEffects`] resource rather than to shared ones,
//! so that bevy's executor may run plugins of the same stage at once; the
//! [`Stage::Gather`] system of each plugin moves them into the block's
//! [`ObjectWrites`], [`Credits`], [`BlockSupply`] and [`ExecFault`] before
//! the credits are summed.
//!
//! [`ParentState`]: crate::world::ParentState

use std::collections::BTreeMap;
use std::marker::PhantomData;

use bevy_ecs::prelude::*;

use crate::storage::{KeyValue, ObjectTable, ObjectWrite, StateView, StorageError};
use crate::supply::SupplyDelta;
use crate::world::{BlockSupply, Credit, Credits, ExecFault, ObjectWrites, Stage};

type Slot = (ObjectTable, Vec<u8>);

/// One chain's objects as a block sees them: its own writes over the
/// committed ones. Reads that miss the block's writes go to the snapshot.
pub struct Overlay<'a> {
    view: &'a dyn StateView,
    chain_id: u32,
    /// The block's writes so far; `None` deletes.
    map: BTreeMap<Slot, Option<Vec<u8>>>,
}

impl<'a> Overlay<'a> {
    /// An empty overlay over `chain_id`'s objects in `view`.
    pub fn new(view: &'a dyn StateView, chain_id: u32) -> Self {
        Self {
            view,
            chain_id,
            map: BTreeMap::new(),
        }
    }

    /// The snapshot under the overlay (for reads of committed state that
    /// the block cannot have changed: accounts, another plugin's objects).
    pub fn view(&self) -> &'a dyn StateView {
        self.view
    }

    /// The chain the overlay reads.
    pub fn chain_id(&self) -> u32 {
        self.chain_id
    }

    /// The value of `key`, this block's writes first.
    pub fn get(&self, table: ObjectTable, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(v) = self.map.get(&(table, key.to_vec())) {
            return Ok(v.clone());
        }
        self.view.object(self.chain_id, table, key)
    }

    /// [`Overlay::get`] decoded with `decode`, in the caller's error type.
    pub fn get_as<T, E: From<StorageError>>(
        &self,
        table: ObjectTable,
        key: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<Option<T>, E> {
        self.get(table, key)?.map(|b| decode(&b)).transpose()
    }

    /// Whether `key` holds a value, this block's writes first.
    pub fn contains(&self, table: ObjectTable, key: &[u8]) -> Result<bool, StorageError> {
        Ok(self.get(table, key)?.is_some())
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, table: ObjectTable, key: Vec<u8>, value: Vec<u8>) {
        self.map.insert((table, key), Some(value));
    }

    /// Deletes `key` (a no-op write when it holds nothing).
    pub fn del(&mut self, table: ObjectTable, key: Vec<u8>) {
        self.map.insert((table, key), None);
    }

    /// The objects under `prefix`, this block's writes included, in key
    /// order. Reads every committed key under the prefix: callers bound
    /// what a prefix can hold.
    pub fn scan(&self, table: ObjectTable, prefix: &[u8]) -> Result<Vec<KeyValue>, StorageError> {
        let mut m: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        self.view.scan(self.chain_id, table, prefix, &mut |k, v| {
            m.insert(k.to_vec(), v.to_vec());
            Ok(true)
        })?;
        for ((t, k), v) in self.map.range((table, prefix.to_vec())..) {
            if *t != table || !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(v) => m.insert(k.clone(), v.clone()),
                None => m.remove(k),
            };
        }
        Ok(m.into_iter().collect())
    }

    /// Whether the block wrote nothing here.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Takes `other`'s writes over this overlay's, as if `other`'s work ran
    /// after this one's. Parts of one block split across threads write
    /// disjoint keys, and absorbing them in a fixed order keeps the result
    /// that of the sequential run.
    pub fn absorb(&mut self, other: Overlay<'_>) {
        debug_assert_eq!(self.chain_id, other.chain_id);
        self.map.extend(other.map);
    }

    /// The writes, one per key, in key order.
    pub fn into_writes(self) -> Vec<ObjectWrite> {
        self.map
            .into_iter()
            .map(|((table, key), value)| ObjectWrite { table, key, value })
            .collect()
    }
}

/// What a plugin's systems did to the block besides their verdicts: object
/// writes, credits to accounts, the supply change, and a fault that fails
/// the block (a storage read failed, a stored object is corrupt).
#[derive(Debug, Default)]
pub struct Effects {
    /// Object writes, at most one per key across all plugins.
    pub writes: Vec<ObjectWrite>,
    /// Credits, summed per account in [`Stage::Credit`].
    pub credits: Vec<Credit>,
    /// Escrow in and out, burns and mints.
    pub delta: SupplyDelta,
    /// Why the block could not be executed.
    pub fault: Option<String>,
}

impl Effects {
    /// Records that the block could not be executed: `plugin: error`.
    pub fn fail(&mut self, plugin: &str, e: impl std::fmt::Display) {
        self.fault = Some(format!("{plugin}: {e}"));
    }
}

/// The [`Effects`] of plugin `P` in the current block, one resource per
/// plugin, so plugins of a stage do not conflict on shared outputs.
#[derive(Resource)]
pub struct PluginEffects<P: Send + Sync + 'static> {
    /// What the plugin did so far in this block.
    pub effects: Effects,
    _plugin: PhantomData<fn() -> P>,
}

impl<P: Send + Sync + 'static> Default for PluginEffects<P> {
    fn default() -> Self {
        Self {
            effects: Effects::default(),
            _plugin: PhantomData,
        }
    }
}

/// Gives plugin `P` its [`PluginEffects`] resource and the
/// [`Stage::Gather`] system that moves them into the block's outputs.
pub fn add_effects<P: Send + Sync + 'static>(world: &mut World, schedule: &mut Schedule) {
    world.insert_resource(PluginEffects::<P>::default());
    schedule.add_systems(gather::<P>.in_set(Stage::Gather));
}

fn gather<P: Send + Sync + 'static>(
    mut own: ResMut<PluginEffects<P>>,
    mut writes: ResMut<ObjectWrites>,
    mut credits: ResMut<Credits>,
    mut supply: ResMut<BlockSupply>,
    mut fault: ResMut<ExecFault>,
) {
    let fx = std::mem::take(&mut own.effects);
    if let Some(f) = fx.fault {
        fault.0 = Some(f);
        return;
    }
    if supply.0.merge(&fx.delta).is_none() {
        fault.0 = Some("block supply delta overflows u128".into());
        return;
    }
    writes.0.extend(fx.writes);
    credits.0.extend(fx.credits);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::smt::NodeBatch;
    use crate::storage::{self, BlockWrite, Head};

    fn store_with(objects: &[ObjectWrite]) -> (tempfile::TempDir, Arc<dyn StateView>) {
        let dir = tempfile::tempdir().unwrap();
        let s = storage::open(dir.path()).unwrap();
        s.commit_block(&BlockWrite {
            chain_id: 1,
            accounts: &[],
            nodes: &NodeBatch::default(),
            height: 0,
            block: b"",
            receipts: b"",
            tx_hashes: &[],
            head: Head::default(),
            objects,
        })
        .unwrap();
        let v = s.snapshot().unwrap();
        (dir, v)
    }

    fn put(k: &[u8], v: u8) -> ObjectWrite {
        ObjectWrite {
            table: ObjectTable::State,
            key: k.to_vec(),
            value: Some(vec![v]),
        }
    }

    #[test]
    fn reads_see_the_blocks_writes_over_the_store() {
        let (_d, v) = store_with(&[put(b"t/a1", 1), put(b"t/a2", 2), put(b"t/b1", 3)]);
        let mut ov = Overlay::new(&*v, 1);
        ov.del(ObjectTable::State, b"t/a2".to_vec());
        ov.put(ObjectTable::State, b"t/a3".to_vec(), vec![9]);
        ov.put(ObjectTable::State, b"t/a4".to_vec(), vec![5]);
        ov.put(ObjectTable::State, b"t/c1".to_vec(), vec![6]);
        ov.put(ObjectTable::Derived, b"t/a5".to_vec(), vec![7]);
        let got = ov.scan(ObjectTable::State, b"t/a").unwrap();
        assert_eq!(
            got,
            vec![
                (b"t/a1".to_vec(), vec![1]),
                (b"t/a3".to_vec(), vec![9]),
                (b"t/a4".to_vec(), vec![5])
            ]
        );
        assert_eq!(ov.get(ObjectTable::State, b"t/a2").unwrap(), None);
        assert_eq!(ov.get(ObjectTable::State, b"t/b1").unwrap(), Some(vec![3]));
        assert!(!ov.contains(ObjectTable::Derived, b"t/a1").unwrap());
        // Another chain's objects are not this chain's.
        assert_eq!(
            Overlay::new(&*v, 2)
                .get(ObjectTable::State, b"t/a1")
                .unwrap(),
            None
        );
        let w = ov.into_writes();
        assert_eq!(w.len(), 5);
        assert!(
            w.windows(2)
                .all(|p| (p[0].table, &p[0].key) < (p[1].table, &p[1].key))
        );
    }

    #[test]
    fn absorbed_parts_equal_one_sequential_overlay() {
        let (_d, v) = store_with(&[put(b"t/a1", 1)]);
        let mut seq = Overlay::new(&*v, 1);
        let mut a = Overlay::new(&*v, 1);
        let mut b = Overlay::new(&*v, 1);
        for (ov, k) in [(&mut seq, b"t/x1"), (&mut a, b"t/x1")] {
            ov.put(ObjectTable::State, k.to_vec(), vec![1]);
        }
        for ov in [&mut seq, &mut b] {
            ov.del(ObjectTable::State, b"t/a1".to_vec());
            ov.put(ObjectTable::Derived, b"t/y".to_vec(), vec![]);
        }
        let mut merged = Overlay::new(&*v, 1);
        merged.absorb(a);
        merged.absorb(b);
        assert_eq!(merged.into_writes(), seq.into_writes());
    }
}
