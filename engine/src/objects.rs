//! The block's plugin objects: one read-your-writes overlay over the parent
//! snapshot, and the effects each plugin hands back to the chain.
//!
//! Execution never writes the store. A plugin that decides a block's
//! payloads reads its objects from the parent snapshot ([`ParentState`])
//! and keeps what it changes in an [`Overlay`]: a later read in the same
//! block sees the earlier write, and at the end the overlay becomes the
//! block's object writes, one per key, in key order. Work split across threads (the
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

use crate::storage::{ObjectTable, ObjectWrite, StateView, StorageError};
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
    /// Credits to accounts, summed per account when the chain settles the
    /// block (after the schedule).
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
    /// Most objects of this type the world keeps between blocks, whatever
    /// the chain's `hot_capacity`: the bound on their memory (an object
    /// costs its value once, plus its index entry).
    const HOT_MAX: usize;
}

/// One object of the hot set: as the block being executed leaves it
/// (`None`: absent, or deleted), and, once the block changes it, as it was
/// committed at the chain's head.
///
/// The world caches the head's state, as it does for accounts: an object
/// loaded once stays until evicted or deleted. Between blocks it holds one
/// copy of its value; after a block executes, that value is the block's
/// state, and a block that is not committed drops the whole hot set (see
/// [`crate::chain`]).
#[derive(Component, Debug, Clone)]
pub struct Obj<T: StateObject> {
    id: T::Id,
    now: Option<T>,
    /// The committed value, kept from the block's first change on.
    before: Option<Option<T>>,
    last_touched: u64,
}

impl<T: StateObject> Obj<T> {
    fn loaded(id: T::Id, r: Option<T>, height: u64) -> Self {
        Self {
            id,
            now: r,
            before: None,
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
        match &self.before {
            Some(b) => b.as_ref(),
            None => self.now.as_ref(),
        }
    }

    /// Sets (`Some`) or deletes (`None`) the object in the current block.
    pub fn set(&mut self, v: Option<T>) {
        let old = std::mem::replace(&mut self.now, v);
        if self.before.is_none() {
            self.before = Some(old);
        }
    }

    fn changed(&self) -> bool {
        matches!(&self.before, Some(b) if *b != self.now)
    }

    /// Makes the block's value the committed one.
    fn settle(&mut self) {
        self.before = None;
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
/// `hot_capacity`), and at most [`StateObject::HOT_MAX`].
pub fn register_object<T: StateObject>(world: &mut World) {
    let capacity = world.resource::<HotSet>().capacity.min(T::HOT_MAX);
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
    let mut q = world.query::<(Entity, &Obj<T>)>();
    let all: Vec<(u64, T::Id, Entity)> = q
        .iter(world)
        .map(|(e, o)| {
            debug_assert!(o.before.is_none(), "evicting an uncommitted object");
            (o.last_touched, o.id, e)
        })
        .collect();
    for (id, e) in least_recent(all, cap) {
        world.despawn(e);
        world.resource_mut::<HotObjects<T>>().index.remove(&id);
    }
}

/// Of the hot entries `(last touched, id, entity)`, the least recently
/// touched ones (ties by id) that bring them down to `capacity` less its
/// [`EVICT_FREE_DIVISOR`]th; none while they fit. Accounts and every object
/// type are evicted by it.
pub(crate) fn least_recent<I: Ord + Copy>(
    all: Vec<(u64, I, Entity)>,
    capacity: usize,
) -> Vec<(I, Entity)> {
    if all.len() <= capacity {
        return Vec::new();
    }
    let keep = capacity - capacity / EVICT_FREE_DIVISOR;
    let drop_n = all.len() - keep;
    // Heights are few (the blocks since the oldest hot entry touched):
    // count them, find the height where the dropped ones end, and order
    // only the entries at that height, by id. Selecting among all of them
    // by (height, id) moved 10 MB a block at 2 × 10⁵ hot accounts.
    let mut per_height: BTreeMap<u64, usize> = BTreeMap::new();
    for (h, _, _) in &all {
        *per_height.entry(*h).or_default() += 1;
    }
    let (mut below, mut cutoff) = (0, 0);
    for (h, n) in per_height {
        if below + n >= drop_n {
            cutoff = h;
            break;
        }
        below += n;
    }
    debug_assert!(below < drop_n);
    let mut out = Vec::with_capacity(drop_n);
    let mut at_cutoff = Vec::new();
    for (h, id, e) in all {
        match h.cmp(&cutoff) {
            std::cmp::Ordering::Less => out.push((id, e)),
            std::cmp::Ordering::Equal => at_cutoff.push((id, e)),
            std::cmp::Ordering::Greater => {}
        }
    }
    let rest = drop_n - below;
    if rest < at_cutoff.len() {
        at_cutoff.select_nth_unstable_by(rest, |a, b| a.0.cmp(&b.0));
        at_cutoff.truncate(rest);
    }
    out.extend(at_cutoff);
    debug_assert_eq!(out.len(), drop_n);
    out
}

/// Eviction frees a tenth of the capacity, so that it runs once per many
/// blocks rather than after each.
pub(crate) const EVICT_FREE_DIVISOR: usize = 10;

/// Loads the objects `ids` names that the world does not hold yet, reading
/// the snapshot on every core, touched at `height` (the hot ones are
/// touched when the block takes their handles, [`Objects::from_hot`]).
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
    // Every read's result, in id order: the error a block fails with is the
    // first in id order on every node, whichever thread met it first.
    let loaded: Vec<Result<Obj<T>, T::Error>> = if missing.len() >= PRELOAD_PAR_MIN {
        missing.par_iter().map(read).collect()
    } else {
        missing.iter().map(read).collect()
    };
    let loaded: Vec<Obj<T>> = loaded.into_iter().collect::<Result<_, _>>()?;
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

/// What a block leaves for the hot set of one object type: the objects
/// it read from the snapshot (no handle on them was taken from the world),
/// as the block left them, and the hot objects it left absent.
pub struct HotUpdate<T: StateObject> {
    read: Vec<Obj<T>>,
    gone: Vec<T::Id>,
}

impl<T: StateObject> HotUpdate<T> {
    /// Takes `other`'s objects too (another part of the same block, over
    /// other ids).
    pub fn absorb(&mut self, other: HotUpdate<T>) {
        self.read.extend(other.read);
        self.gone.extend(other.gone);
    }
}

impl<T: StateObject> Default for HotUpdate<T> {
    fn default() -> Self {
        Self {
            read: Vec::new(),
            gone: Vec::new(),
        }
    }
}

/// Applies a block's [`HotUpdate`] to the world: objects read from the
/// snapshot are spawned and indexed (or, where the world holds an entity
/// for the id after all, replace its object, so the world never keeps a
/// stale one), and objects the block left absent leave the world, so a
/// deleted bid or order costs no memory after its block (a later block
/// that names it reads the snapshot's absence again). It takes effect at
/// the schedule's next sync point.
pub fn update_hot_set<T: StateObject>(
    commands: &mut Commands,
    hot: &mut HotObjects<T>,
    update: HotUpdate<T>,
) {
    for o in update.read {
        let id = o.id;
        match (hot.index.get(&id).copied(), o.now.is_some()) {
            (Some(e), true) => {
                commands.entity(e).insert(o);
            }
            (None, true) => {
                let e = commands.spawn(o).id();
                hot.index.insert(id, e);
            }
            (Some(e), false) => {
                hot.index.remove(&id);
                commands.entity(e).despawn();
            }
            (None, false) => {}
        }
    }
    for id in update.gone {
        if let Some(e) = hot.index.remove(&id) {
            commands.entity(e).despawn();
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
            // object is read from the snapshot instead, and `update_hot_set`
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
    /// makes them the committed values, and returns what the hot set keeps
    /// of them, for [`update_hot_set`].
    pub fn finish(self, ov: &mut Overlay<'_>) -> HotUpdate<T> {
        let mut up = HotUpdate::default();
        for (id, mut slot) in self.slots {
            let o = slot.obj_mut();
            if o.changed() {
                match &o.now {
                    Some(v) => {
                        let bytes = v.encode();
                        // A warm node keeps `v` and a restarted one decodes
                        // `bytes`: they must agree.
                        debug_assert!(
                            T::decode(&bytes).is_ok_and(|d| d == *v),
                            "a record that does not survive its encoding"
                        );
                        ov.put(ObjectTable::State, T::key(&id), bytes);
                    }
                    None => ov.del(ObjectTable::State, T::key(&id)),
                }
            }
            o.settle();
            match slot {
                Slot::Read(o) => up.read.push(o),
                Slot::Hot(o) if o.now.is_none() => up.gone.push(id),
                Slot::Hot(_) => {}
            }
        }
        up
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::{self, BlockWrite, Head, state_writes};

    fn store_with(objects: &[ObjectWrite]) -> (tempfile::TempDir, Arc<dyn StateView>) {
        let dir = tempfile::tempdir().unwrap();
        let s = storage::open(dir.path()).unwrap();
        let state = s
            .snapshot()
            .unwrap()
            .prepare_state(1, &state_writes(&[], objects))
            .unwrap();
        s.commit_block(&BlockWrite {
            chain_id: 1,
            accounts: &[],
            state: &state,
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
        assert_eq!(ov.get(ObjectTable::State, b"t/a1").unwrap(), Some(vec![1]));
        assert_eq!(ov.get(ObjectTable::State, b"t/a3").unwrap(), Some(vec![9]));
        assert_eq!(
            ov.get(ObjectTable::Derived, b"t/a5").unwrap(),
            Some(vec![7])
        );
        assert!(!ov.contains(ObjectTable::State, b"t/a5").unwrap());
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

    /// A one-byte record under `o/` ‖ id.
    #[derive(Clone, Debug, PartialEq)]
    struct Rec(u8);

    impl StateObject for Rec {
        type Id = u32;
        type Error = StorageError;
        const HOT_MAX: usize = 3;
        fn key(id: &u32) -> Vec<u8> {
            [b"o/".as_slice(), &id.to_be_bytes()].concat()
        }
        fn encode(&self) -> Vec<u8> {
            vec![self.0]
        }
        fn decode(b: &[u8]) -> Result<Self, StorageError> {
            match b {
                [v] => Ok(Rec(*v)),
                _ => Err(StorageError::Backend("corrupt".into())),
            }
        }
    }

    fn rec(id: u32, v: u8) -> ObjectWrite {
        put(&Rec::key(&id), v)
    }

    fn hot_ids(world: &mut World) -> Vec<u32> {
        let mut ids: Vec<u32> = world
            .query::<&Obj<Rec>>()
            .iter(world)
            .map(|o| o.id)
            .collect();
        ids.sort();
        let index: Vec<u32> = world
            .resource::<HotObjects<Rec>>()
            .index
            .keys()
            .copied()
            .collect();
        assert_eq!(ids, index, "the index names exactly the entities");
        ids
    }

    #[test]
    fn a_block_leaves_changed_and_read_objects_hot_and_deleted_ones_gone() {
        use bevy_ecs::system::SystemState;

        let (_d, v) = store_with(&[rec(1, 10), rec(4, 40), rec(5, 50)]);
        let mut world = World::new();
        world.insert_resource(HotSet {
            capacity: 10,
            ..Default::default()
        });
        register_object::<Rec>(&mut world);
        // The type's own bound is below the chain's.
        assert_eq!(world.resource::<HotObjects<Rec>>().capacity, 3);

        // Load: 1 exists, 2 does not; both are in the world for the block.
        preload::<Rec>(&mut world, &*v, 1, 7, &BTreeSet::from([1, 2])).unwrap();
        assert_eq!(hot_ids(&mut world), vec![1, 2]);

        let mut state =
            SystemState::<(Query<&mut Obj<Rec>>, Res<HotObjects<Rec>>)>::new(&mut world);
        let (mut q, hot) = state.get_mut(&mut world).unwrap();
        let mut objs = Objects::from_hot(&mut q, &hot, &[1, 2], &*v, 1, 7);
        assert_eq!(objs.get(&1).unwrap(), Some(Rec(10)));
        objs.set(&1, None).unwrap();
        objs.set(&2, Some(Rec(20))).unwrap();
        // Misses read the snapshot: 3 is absent, 4 is read and kept, 5 is
        // read and deleted.
        assert_eq!(objs.get(&3).unwrap(), None);
        assert_eq!(objs.get(&4).unwrap(), Some(Rec(40)));
        objs.set(&5, None).unwrap();
        let changes: Vec<(u32, Option<Rec>, Option<Rec>)> = objs
            .changes()
            .map(|(id, was, now)| (*id, was.cloned(), now.cloned()))
            .collect();
        assert_eq!(
            changes,
            vec![
                (1, Some(Rec(10)), None),
                (2, None, Some(Rec(20))),
                (5, Some(Rec(50)), None)
            ]
        );
        let mut ov = Overlay::new(&*v, 1);
        let update = objs.finish(&mut ov);
        let writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = ov
            .into_writes()
            .into_iter()
            .map(|w| (w.key, w.value))
            .collect();
        assert_eq!(
            writes,
            vec![
                (Rec::key(&1), None),
                (Rec::key(&2), Some(vec![20])),
                (Rec::key(&5), None)
            ]
        );
        let mut after = SystemState::<(Commands, ResMut<HotObjects<Rec>>)>::new(&mut world);
        let (mut commands, mut hot) = after.get_mut(&mut world).unwrap();
        update_hot_set(&mut commands, &mut hot, update);
        after.apply(&mut world);
        // What exists after the block stays; what does not, leaves.
        assert_eq!(hot_ids(&mut world), vec![2, 4]);
        let now: Vec<(u32, Option<Rec>, bool)> = world
            .query::<&Obj<Rec>>()
            .iter(&world)
            .map(|o| (o.id, o.get().cloned(), o.changed()))
            .collect();
        assert!(now.contains(&(2, Some(Rec(20)), false)));
        assert!(now.contains(&(4, Some(Rec(40)), false)));
    }

    #[test]
    fn eviction_drops_the_least_recently_touched_down_to_nine_tenths() {
        let mut world = World::new();
        let e: Vec<Entity> = (0..25).map(|_| world.spawn_empty().id()).collect();
        // Touched at heights 24, 23, ..., 0; ids 0..25.
        let all: Vec<(u64, u32, Entity)> = (0..25u32)
            .map(|i| (24 - u64::from(i), i, e[i as usize]))
            .collect();
        assert!(least_recent(all.clone(), 25).is_empty());
        let mut gone: Vec<u32> = least_recent(all.clone(), 20)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        gone.sort();
        // 20 - 20/10 = 18 stay: the 7 touched longest ago go.
        assert_eq!(gone, (18..25).collect::<Vec<_>>());
        // Ties in height go by id.
        let tied: Vec<(u64, u32, Entity)> = (0..5u32).map(|i| (1, i, e[i as usize])).collect();
        let mut gone: Vec<u32> = least_recent(tied, 2).into_iter().map(|(i, _)| i).collect();
        gone.sort();
        assert_eq!(gone, vec![0, 1, 2]);
    }

    proptest::proptest! {
        /// The entries dropped are the least by (height, id), as a sort of
        /// them all would pick.
        #[test]
        fn eviction_drops_the_least_by_height_then_id(
            heights in proptest::collection::vec(0u64..6, 0..200),
            capacity in 1usize..120,
        ) {
            let mut world = World::new();
            let all: Vec<(u64, u32, Entity)> = heights
                .iter()
                .enumerate()
                .map(|(i, h)| (*h, (i as u32).wrapping_mul(2_654_435_761), world.spawn_empty().id()))
                .collect();
            let mut gone: Vec<u32> = least_recent(all.clone(), capacity)
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            gone.sort_unstable();
            let mut sorted = all.clone();
            sorted.sort_unstable_by_key(|a| (a.0, a.1));
            let drop_n = all
                .len()
                .saturating_sub(capacity - capacity / EVICT_FREE_DIVISOR);
            let drop_n = if all.len() <= capacity { 0 } else { drop_n };
            let mut want: Vec<u32> = sorted[..drop_n].iter().map(|a| a.1).collect();
            want.sort_unstable();
            proptest::prop_assert_eq!(gone, want);
        }
    }
}
