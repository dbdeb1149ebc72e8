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

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;

use bevy_ecs::prelude::*;
use rayon::prelude::*;

use crate::storage::{KeyValue, ObjectTable, ObjectWrite, StateView, StorageError};
use crate::supply::SupplyDelta;
use crate::world::{BlockSupply, Credit, Credits, ExecFault, HotSet, ObjectWrites, Stage};

type KeySlot = (ObjectTable, Vec<u8>);

/// One chain's objects as a block sees them: its own writes over the
/// committed ones. Reads that miss the block's writes go to the snapshot.
pub struct Overlay<'a> {
    view: &'a dyn StateView,
    chain_id: u32,
    /// The block's writes so far; `None` deletes.
    map: BTreeMap<KeySlot, Option<Vec<u8>>>,
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

// ---------------------------------------------------------------------------
// Objects as entities: the hot set of plugin objects.
// ---------------------------------------------------------------------------

/// A plugin's state object that lives in the hot set as an entity: a SKU, a
/// deal, a bid, a policy. Stored in [`ObjectTable::State`] under
/// [`StateObject::key`], so it enters the state root like any object.
pub trait StateObject: Clone + PartialEq + Send + Sync + 'static {
    /// What names one object; ordered as the keys are, so that objects in
    /// id order are in key order.
    type Id: Copy + Ord + Send + Sync + std::fmt::Debug + 'static;
    /// The plugin's error, for a record that does not decode.
    type Error: From<StorageError> + Send;
    /// The object's key in the state table.
    fn key(id: &Self::Id) -> Vec<u8>;
    /// The stored record.
    fn encode(&self) -> Vec<u8>;
    /// Decodes a stored record; a corrupt one is an error.
    fn decode(b: &[u8]) -> Result<Self, Self::Error>;
}

/// One object of the hot set: as committed at the chain's head, and as the
/// block being executed leaves it (`None`: absent, or deleted).
///
/// The world caches the head's state, as it does for accounts: an object
/// loaded once stays until evicted, and an absent one is remembered as
/// absent. After a block executes, `committed` is that block's state; a
/// block that is not committed drops the whole hot set (see
/// [`crate::chain`]).
#[derive(Component, Debug, Clone)]
pub struct Obj<T: StateObject> {
    id: T::Id,
    committed: Option<T>,
    now: Option<T>,
    last_touched: u64,
}

impl<T: StateObject> Obj<T> {
    fn loaded(id: T::Id, r: Option<T>, height: u64) -> Self {
        Self {
            id,
            committed: r.clone(),
            now: r,
            last_touched: height,
        }
    }

    /// Its id.
    pub fn id(&self) -> &T::Id {
        &self.id
    }

    /// The object as the current block left it so far.
    pub fn get(&self) -> Option<&T> {
        self.now.as_ref()
    }

    /// The object as committed before the current block.
    pub fn committed(&self) -> Option<&T> {
        self.committed.as_ref()
    }

    /// Sets (`Some`) or deletes (`None`) the object in the current block.
    pub fn set(&mut self, v: Option<T>) {
        self.now = v;
    }

    fn changed(&self) -> bool {
        self.now != self.committed
    }
}

/// Which entity holds which object of type `T`, for the objects in the
/// world, in id order (so a plugin finds a range: one SKU's bids).
#[derive(Resource, Debug)]
pub struct HotObjects<T: StateObject> {
    /// Id → entity.
    pub index: BTreeMap<T::Id, Entity>,
    /// Most objects of this type kept between blocks; above it the least
    /// recently touched are evicted after a commit (they are on disk).
    pub capacity: usize,
}

/// The drop and evict hooks of every registered object type, so the chain
/// manages the whole hot set without knowing plugin types.
#[derive(Resource, Default)]
pub struct ObjectTypes(Vec<ObjectTypeHooks>);

#[derive(Clone, Copy)]
struct ObjectTypeHooks {
    drop_all: fn(&mut World),
    evict: fn(&mut World),
}

/// Registers `T` as a hot-set object type. As many objects of it are kept
/// between blocks as accounts ([`HotSet::capacity`], the chain's
/// `hot_capacity`).
pub fn register_object<T: StateObject>(world: &mut World) {
    let capacity = world.resource::<HotSet>().capacity;
    assert!(capacity > 0, "a hot set holds at least one object");
    world.insert_resource(HotObjects::<T> {
        index: BTreeMap::new(),
        capacity,
    });
    world.init_resource::<ObjectTypes>();
    world.resource_mut::<ObjectTypes>().0.push(ObjectTypeHooks {
        drop_all: drop_all::<T>,
        evict: evict::<T>,
    });
}

/// Drops every plugin object from the world (the chain calls it with the
/// accounts' drop: the world no longer matches the head).
pub fn drop_all_objects(world: &mut World) {
    let hooks = world.get_resource::<ObjectTypes>().map(|t| t.0.clone());
    for h in hooks.into_iter().flatten() {
        (h.drop_all)(world);
    }
}

/// Evicts, per object type, the least recently touched objects above its
/// capacity (the chain calls it after a commit, when nothing is dirty).
pub fn evict_objects(world: &mut World) {
    let hooks = world.get_resource::<ObjectTypes>().map(|t| t.0.clone());
    for h in hooks.into_iter().flatten() {
        (h.evict)(world);
    }
}

fn drop_all<T: StateObject>(world: &mut World) {
    let index = std::mem::take(&mut world.resource_mut::<HotObjects<T>>().index);
    for e in index.into_values() {
        world.despawn(e);
    }
}

fn evict<T: StateObject>(world: &mut World) {
    let (len, cap) = {
        let hot = world.resource::<HotObjects<T>>();
        (hot.index.len(), hot.capacity)
    };
    if len <= cap {
        return;
    }
    // Down to 90 % of the capacity, so eviction runs once per many blocks.
    let keep = cap - cap / 10;
    let mut q = world.query::<(Entity, &Obj<T>)>();
    let mut all: Vec<(u64, T::Id, Entity)> = q
        .iter(world)
        .map(|(e, o)| {
            debug_assert!(!o.changed(), "evicting an uncommitted object");
            (o.last_touched, o.id, e)
        })
        .collect();
    let drop_n = all.len().saturating_sub(keep);
    if drop_n == 0 {
        return;
    }
    all.select_nth_unstable_by(drop_n - 1, |a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    for (_, id, e) in all.into_iter().take(drop_n) {
        world.despawn(e);
        world.resource_mut::<HotObjects<T>>().index.remove(&id);
    }
}

/// Loads the objects `ids` names that the world does not hold yet, reading
/// the snapshot on every core, and marks all of them touched at `height`.
/// The block's load step: what a block declares is read before its
/// systems run, not in the middle of them.
pub fn preload<T: StateObject>(
    world: &mut World,
    view: &dyn StateView,
    chain_id: u32,
    height: u64,
    ids: &BTreeSet<T::Id>,
) -> Result<(), T::Error> {
    let missing: Vec<T::Id> = {
        let hot = world.resource::<HotObjects<T>>();
        ids.iter()
            .filter(|id| !hot.index.contains_key(*id))
            .copied()
            .collect()
    };
    let read = |id: &T::Id| -> Result<Obj<T>, T::Error> {
        let r = view
            .object(chain_id, ObjectTable::State, &T::key(id))?
            .map(|b| T::decode(&b))
            .transpose()?;
        Ok(Obj::loaded(*id, r, height))
    };
    let loaded: Vec<Obj<T>> = if missing.len() >= PRELOAD_PAR_MIN {
        missing.par_iter().map(read).collect::<Result<_, _>>()?
    } else {
        missing.iter().map(read).collect::<Result<_, _>>()?
    };
    for o in loaded {
        let id = o.id;
        let e = world.spawn(o).id();
        world.resource_mut::<HotObjects<T>>().index.insert(id, e);
    }
    Ok(())
}

/// Fewer missing objects than this are read on one thread.
const PRELOAD_PAR_MIN: usize = 64;

/// The entities of `ids` that the world holds, as a set a query can fetch
/// mutably at once ([`Query::iter_many_unique_mut`]).
pub fn hot_entities<'i, T: StateObject>(
    hot: &HotObjects<T>,
    ids: impl IntoIterator<Item = &'i T::Id>,
) -> BTreeSet<Entity> {
    ids.into_iter()
        .filter_map(|id| hot.index.get(id).copied())
        .collect()
}

/// Puts objects that a block read from the snapshot (no handle on them
/// was taken from the world) into the hot set, as the block left them:
/// spawned and indexed, or, where the world holds an entity for the id
/// after all, replacing its object so the world never keeps a stale one.
/// They take effect at the schedule's next sync point.
pub fn spawn_read<T: StateObject>(
    commands: &mut Commands,
    hot: &mut HotObjects<T>,
    objs: Vec<Obj<T>>,
) {
    for o in objs {
        let id = o.id;
        match hot.index.get(&id) {
            Some(e) => {
                commands.entity(*e).insert(o);
            }
            None => {
                let e = commands.spawn(o).id();
                hot.index.insert(id, e);
            }
        }
    }
}

/// A block's handles on objects of type `T`: entities of the hot set taken
/// mutably for the block, and objects read from the snapshot on a miss
/// (spawned into the world after the block's work). One part of a block
/// split across threads holds the handles of its own objects only.
pub struct Objects<'w, T: StateObject> {
    view: &'w dyn StateView,
    chain_id: u32,
    height: u64,
    slots: BTreeMap<T::Id, Slot<'w, T>>,
}

enum Slot<'w, T: StateObject> {
    Hot(Mut<'w, Obj<T>>),
    Read(Obj<T>),
}

impl<T: StateObject> Slot<'_, T> {
    fn obj(&self) -> &Obj<T> {
        match self {
            Slot::Hot(m) => m,
            Slot::Read(o) => o,
        }
    }

    fn obj_mut(&mut self) -> &mut Obj<T> {
        match self {
            Slot::Hot(m) => m,
            Slot::Read(o) => o,
        }
    }
}

impl<'w, T: StateObject> Objects<'w, T> {
    /// No handles yet; misses read `chain_id`'s objects in `view`.
    pub fn new(view: &'w dyn StateView, chain_id: u32, height: u64) -> Self {
        Self {
            view,
            chain_id,
            height,
            slots: BTreeMap::new(),
        }
    }

    /// Adds a hot entity's object (from a query), touched at this height.
    pub fn add(&mut self, mut obj: Mut<'w, Obj<T>>) {
        obj.last_touched = self.height;
        let id = obj.id;
        let old = self.slots.insert(id, Slot::Hot(obj));
        debug_assert!(old.is_none(), "an object handed out twice");
    }

    /// Takes the entities of `ids` that the world holds from `q`, mutably
    /// and at once, as handles touched at this block's height.
    pub fn from_hot<'i>(
        q: &'w mut Query<'_, '_, &mut Obj<T>>,
        hot: &HotObjects<T>,
        ids: impl IntoIterator<Item = &'i T::Id>,
        view: &'w dyn StateView,
        chain_id: u32,
        height: u64,
    ) -> Self {
        let mut o = Self::new(view, chain_id, height);
        for m in q.iter_many_unique_mut(hot_entities(hot, ids)) {
            // Every indexed entity holds its object; were one not to, the
            // object is read from the snapshot instead, and `spawn_read`
            // puts it back.
            debug_assert!(m.is_ok(), "an indexed entity without its object");
            if let Ok(m) = m {
                o.add(m);
            }
        }
        o
    }

    /// Splits the handles into one set per `part(id)` (the parts of a
    /// block that run on different threads), in part order.
    pub fn group_by<K: Ord>(self, part: impl Fn(&T::Id) -> K) -> BTreeMap<K, Self> {
        let mut out: BTreeMap<K, Self> = BTreeMap::new();
        for (id, slot) in self.slots {
            out.entry(part(&id))
                .or_insert_with(|| Self::new(self.view, self.chain_id, self.height))
                .slots
                .insert(id, slot);
        }
        out
    }

    /// An empty set over the same snapshot (a part with no hot objects).
    pub fn empty_like(&self) -> Self {
        Self::new(self.view, self.chain_id, self.height)
    }

    fn slot(&mut self, id: &T::Id) -> Result<&mut Obj<T>, T::Error> {
        if !self.slots.contains_key(id) {
            let r = self
                .view
                .object(self.chain_id, ObjectTable::State, &T::key(id))?
                .map(|b| T::decode(&b))
                .transpose()?;
            self.slots
                .insert(*id, Slot::Read(Obj::loaded(*id, r, self.height)));
        }
        Ok(self.slots.get_mut(id).expect("inserted above").obj_mut())
    }

    /// The object as the block left it so far (read on a miss).
    pub fn get(&mut self, id: &T::Id) -> Result<Option<T>, T::Error> {
        Ok(self.slot(id)?.get().cloned())
    }

    /// Sets (`Some`) or deletes (`None`) the object.
    pub fn set(&mut self, id: &T::Id, v: Option<T>) -> Result<(), T::Error> {
        self.slot(id)?.set(v);
        Ok(())
    }

    /// Sets an object the block has read already (an invariant of the
    /// caller: reading it is what decided to change it).
    pub fn replace(&mut self, id: &T::Id, v: Option<T>) {
        self.slots
            .get_mut(id)
            .expect("an object is read before it is replaced")
            .obj_mut()
            .set(v);
    }

    /// Makes `bytes`, read by the caller's scan of the snapshot, the
    /// committed value of `id` unless a handle on it is held already.
    pub fn add_scanned(&mut self, id: T::Id, bytes: &[u8]) -> Result<(), T::Error> {
        if !self.slots.contains_key(&id) {
            let r = T::decode(bytes)?;
            self.slots
                .insert(id, Slot::Read(Obj::loaded(id, Some(r), self.height)));
        }
        Ok(())
    }

    /// The ids held in `range` whose object exists now, in id order.
    pub fn present_in(&self, range: impl std::ops::RangeBounds<T::Id>) -> Vec<T::Id> {
        self.slots
            .range(range)
            .filter(|(_, s)| s.obj().get().is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every object the block changed: id, committed and new value.
    pub fn changes(&self) -> impl Iterator<Item = (&T::Id, Option<&T>, Option<&T>)> {
        self.slots
            .iter()
            .map(|(id, s)| (id, s.obj()))
            .filter(|(_, o)| o.changed())
            .map(|(id, o)| (id, o.committed(), o.get()))
    }

    /// Writes the block's changes to `ov` (one write per changed object),
    /// makes them the committed values, and returns the objects read from
    /// the snapshot, for [`spawn_read`].
    pub fn finish(self, ov: &mut Overlay<'_>) -> Vec<Obj<T>> {
        let mut read = Vec::new();
        for (id, mut slot) in self.slots {
            let o = slot.obj_mut();
            if o.changed() {
                match &o.now {
                    Some(v) => ov.put(ObjectTable::State, T::key(&id), v.encode()),
                    None => ov.del(ObjectTable::State, T::key(&id)),
                }
                o.committed = o.now.clone();
            }
            if let Slot::Read(o) = slot {
                read.push(o);
            }
        }
        read
    }
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
