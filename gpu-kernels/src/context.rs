//! The GPU context: one adapter and device, the features and limits that
//! shape the kernels, compiled pipelines cached by name, and the one way
//! kernels are launched: upload, dispatch, read back, with outputs that
//! may stay on the device as the next kernel's input ([`DeviceWords`]).
//!
//! Everything here blocks the calling thread (wgpu's futures are driven
//! with `pollster`); the node calls it from its verification workers, never
//! from an async runtime.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::GpuError;

/// Threads per workgroup of every kernel in this crate (a multiple of the
/// warp/wavefront size of current GPUs: 32 on NVIDIA, 64 on AMD).
pub const WORKGROUP_SIZE: u32 = 64;

/// Which wgpu backends to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// Vulkan, Metal or DX12: the native compute APIs (lavapipe counts as
    /// Vulkan).
    #[default]
    Native,
    /// OpenGL (ES) only: on a CPU-only machine this is Mesa's llvmpipe,
    /// which has no 64-bit integers, so it runs the portable kernels.
    Gl,
}

/// How to open a [`GpuContext`].
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// The backends to look at.
    pub backend: BackendChoice,
    /// Ignore `SHADER_INT64` even where the adapter has it, so the portable
    /// `u32`-only kernels run (for tests and for comparing the two).
    pub portable_only: bool,
    /// Most items (points, hashes, field elements) per launch of the
    /// batch kernels; `0` means as many as the binding limit and the
    /// kernel's own cap allow. Tests set it small to put chunk boundaries
    /// inside small inputs.
    pub max_items_per_launch: usize,
}

/// What the chosen adapter is and can do, as `int gpu info` prints it.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    /// The adapter's name (e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub name: String,
    /// Vulkan, Metal, Dx12 or Gl.
    pub backend: String,
    /// Discrete, integrated, virtual, or `Cpu` (a software rasteriser).
    pub device_type: wgpu::DeviceType,
    /// Driver name and version as the driver reports them.
    pub driver: String,
    /// PCI vendor id.
    pub vendor: u32,
    /// Whether the kernels use 64-bit integer multiply-accumulate.
    pub shader_int64: bool,
    /// `max_storage_buffer_binding_size`, bytes: the largest buffer one
    /// kernel argument may be; inputs are chunked below it.
    pub max_storage_binding_bytes: u64,
    /// `max_buffer_size`, bytes.
    pub max_buffer_bytes: u64,
    /// `max_compute_workgroups_per_dimension`.
    pub max_workgroups_per_dim: u32,
    /// `max_compute_invocations_per_workgroup`.
    pub max_invocations_per_workgroup: u32,
    /// `max_storage_buffers_per_shader_stage`.
    pub max_storage_buffers_per_stage: u32,
}

impl AdapterSummary {
    /// Whether the adapter is a software rasteriser (lavapipe, llvmpipe):
    /// the same CPU cores behind a GPU API.
    pub fn is_software(&self) -> bool {
        self.device_type == wgpu::DeviceType::Cpu
    }
}

/// One input of a launch: a read-only storage buffer of `u32` words.
pub type Words<'a> = &'a [u32];

/// `u32` words that live in a storage buffer on the device: an upload, or
/// the output of a [`GpuContext::dispatch`]. Dropping it frees the buffer
/// once the queue no longer needs it.
#[derive(Debug)]
pub struct DeviceWords {
    buffer: wgpu::Buffer,
    words: usize,
}

impl DeviceWords {
    /// Number of `u32` words.
    pub fn len(&self) -> usize {
        self.words
    }

    /// Whether it holds no words.
    pub fn is_empty(&self) -> bool {
        self.words == 0
    }
}

/// A submitted launch whose output is on its way to a mappable buffer:
/// [`GpuContext::wait`] returns the words.
#[derive(Debug)]
pub struct Pending {
    staging: wgpu::Buffer,
    words: usize,
    index: wgpu::SubmissionIndex,
}

/// Launches [`GpuContext::pipelined`] keeps submitted at once: two, so one
/// chunk is read back and converted while the next computes.
pub const LAUNCHES_IN_FLIGHT: usize = 2;

/// One input of a [`GpuContext::dispatch`]: words on the host (uploaded
/// for this launch) or already on the device.
#[derive(Clone, Copy, Debug)]
pub enum Arg<'a> {
    /// Host words, copied to the device by the dispatch.
    Host(&'a [u32]),
    /// A buffer already on the device: no copy.
    Device(&'a DeviceWords),
}

impl Arg<'_> {
    /// Number of `u32` words.
    pub fn len(&self) -> usize {
        match self {
            Arg::Host(w) => w.len(),
            Arg::Device(d) => d.words,
        }
    }

    /// Whether it holds no words.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An open GPU: device, queue and the pipeline cache. Cheap to share
/// (`Arc`); pipelines are compiled on first use and kept.
pub struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    summary: AdapterSummary,
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    /// Held around every compile and launch on the GL backend: wgpu's GL
    /// backend shares one context between threads and panics when a thread
    /// waits more than a few seconds for it, which is less than llvmpipe
    /// takes to compile a curve kernel. Our callers wait here instead,
    /// without a limit. `None` on the native backends (no such lock).
    gl_serial: Option<Mutex<()>>,
    /// [`GpuOptions::max_items_per_launch`].
    max_items_per_launch: usize,
    /// Running totals of what crossed the bus (see [`TransferStats`]).
    uploaded_bytes: AtomicU64,
    read_bytes: AtomicU64,
    dispatches: AtomicU64,
}

/// What a [`GpuContext`] has moved and launched since it was opened:
/// the host-to-device and device-to-host bytes and the kernel launches.
/// On a discrete GPU every byte crosses PCIe (about 25 GB/s each way on
/// PCIe 4.0 x16, so 1 MB costs about 40 µs), which is why the MSM keeps
/// its intermediates on the device; take the difference of two snapshots
/// to see what one call cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Bytes uploaded (kernel inputs).
    pub uploaded_bytes: u64,
    /// Bytes read back (kernel outputs).
    pub read_bytes: u64,
    /// Kernel launches.
    pub dispatches: u64,
}

impl std::ops::Sub for TransferStats {
    type Output = TransferStats;
    fn sub(self, earlier: TransferStats) -> TransferStats {
        TransferStats {
            uploaded_bytes: self.uploaded_bytes.saturating_sub(earlier.uploaded_bytes),
            read_bytes: self.read_bytes.saturating_sub(earlier.read_bytes),
            dispatches: self.dispatches.saturating_sub(earlier.dispatches),
        }
    }
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.summary.name)
            .field("backend", &self.summary.backend)
            .finish()
    }
}

impl GpuContext {
    /// Opens the best adapter of the chosen backends (high-performance
    /// preference: a discrete GPU over an integrated one over a software
    /// rasteriser). `Err(GpuError::NoAdapter)` when there is none.
    pub fn new(opts: &GpuOptions) -> Result<Self, GpuError> {
        let backends = match opts.backend {
            BackendChoice::Native => {
                wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12
            }
            BackendChoice::Gl => wgpu::Backends::GL,
        };
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            ..Default::default()
        }))
        .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let features = adapter.features();
        let limits = adapter.limits();
        let int64 = features.contains(wgpu::Features::SHADER_INT64) && !opts.portable_only;
        let required_features = if int64 {
            wgpu::Features::SHADER_INT64
        } else {
            wgpu::Features::empty()
        };
        // Ask for the adapter's own limits: the defaults cap storage
        // bindings at 128 MiB and buffers at 256 MiB even on cards with more.
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("int-gpu"),
            required_features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::Device(e.to_string()))?;
        let summary = AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: info.device_type,
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            vendor: info.vendor,
            shader_int64: int64,
            max_storage_binding_bytes: limits.max_storage_buffer_binding_size,
            max_buffer_bytes: limits.max_buffer_size,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
        };
        tracing::info!(
            adapter = %summary.name,
            backend = %summary.backend,
            shader_int64 = summary.shader_int64,
            "GPU adapter opened"
        );
        Ok(Self {
            device,
            queue,
            summary,
            pipelines: Mutex::new(HashMap::new()),
            gl_serial: (opts.backend == BackendChoice::Gl).then(|| Mutex::new(())),
            max_items_per_launch: opts.max_items_per_launch,
            uploaded_bytes: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            dispatches: AtomicU64::new(0),
        })
    }

    /// The GL serialisation guard (see `gl_serial`); `None` elsewhere. A
    /// poisoned lock is taken anyway: it guards no data.
    fn exclusive(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        self.gl_serial
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The adapter, its backend, features and limits.
    pub fn summary(&self) -> &AdapterSummary {
        &self.summary
    }

    /// Bytes moved and kernels launched so far (all threads together).
    pub fn transfer_stats(&self) -> TransferStats {
        TransferStats {
            uploaded_bytes: self.uploaded_bytes.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            dispatches: self.dispatches.load(Ordering::Relaxed),
        }
    }

    /// Whether kernels use 64-bit integers (`SHADER_INT64`).
    pub fn int64(&self) -> bool {
        self.summary.shader_int64
    }

    /// The multiply path the kernels take on this adapter: `u64`
    /// multiply-accumulate where it has `SHADER_INT64`, else the portable
    /// `u32` path.
    pub fn mul_path(&self) -> crate::MulPath {
        if self.int64() {
            crate::MulPath::Int64
        } else {
            crate::MulPath::Portable
        }
    }

    /// Largest number of `u32` words one buffer binding may hold.
    pub fn max_binding_words(&self) -> usize {
        let bytes = self
            .summary
            .max_storage_binding_bytes
            .min(self.summary.max_buffer_bytes);
        usize::try_from(bytes / 4).unwrap_or(usize::MAX)
    }

    /// `TooLarge` unless `words` fit one buffer binding.
    fn fits(&self, what: &str, words: usize) -> Result<(), GpuError> {
        let max_words = self.max_binding_words();
        if words > max_words {
            return Err(GpuError::TooLarge {
                what: what.into(),
                words,
                max_words,
            });
        }
        Ok(())
    }

    /// The pipeline cached under `key`, compiling `source()`'s WGSL (entry
    /// point `main`) on first use. A WGSL error is a bug in this crate, but
    /// it is reported as [`GpuError::Shader`] rather than a panic.
    pub fn pipeline(
        &self,
        key: &str,
        source: impl FnOnce() -> String,
    ) -> Result<Arc<wgpu::ComputePipeline>, GpuError> {
        let _gl = self.exclusive();
        let mut cache = self
            .pipelines
            .lock()
            .map_err(|_| GpuError::Device("pipeline cache poisoned".into()))?;
        if let Some(p) = cache.get(key) {
            return Ok(p.clone());
        }
        let wgsl = source();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(key),
                source: wgpu::ShaderSource::Wgsl(wgsl.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(key),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Shader {
                kernel: key.to_string(),
                message: err.to_string(),
            });
        }
        let p = Arc::new(pipeline);
        cache.insert(key.to_string(), p.clone());
        Ok(p)
    }

    /// Runs `pipeline` over `threads` invocations and returns its output:
    /// [`GpuContext::submit`] of host inputs, then [`GpuContext::wait`].
    ///
    /// Bindings of group 0, in order: `inputs` as read-only storage
    /// buffers (`@binding(0)` …), then the output, a read-write storage
    /// buffer of `output_words` words, zeroed (`@binding(inputs.len())`).
    /// Workgroups are laid out in two dimensions when `threads` needs more
    /// than the per-dimension limit; kernels compute their index as
    /// `gid.x + gid.y * num_workgroups.x * WORKGROUP_SIZE` and return when
    /// it is past their element count.
    pub fn launch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        inputs: &[Words<'_>],
        output_words: usize,
        threads: u32,
    ) -> Result<Vec<u32>, GpuError> {
        let args: Vec<Arg<'_>> = inputs.iter().map(|w| Arg::Host(w)).collect();
        let pending = self.submit(pipeline, &args, output_words, threads)?;
        self.wait(pending)
    }

    /// Copies `words` into a new storage buffer on the device, for kernels
    /// that share an input or chain their outputs ([`Arg::Device`]).
    pub fn upload(&self, words: &[u32]) -> Result<DeviceWords, GpuError> {
        self.fits("upload", words.len())?;
        let _gl = self.exclusive();
        Ok(self.upload_unlocked(words))
    }

    fn upload_unlocked(&self, words: &[u32]) -> DeviceWords {
        // wgpu refuses zero-sized bindings; an empty input becomes one word.
        let pad = [0u32; 1];
        let data: &[u32] = if words.is_empty() { &pad } else { words };
        self.uploaded_bytes
            .fetch_add(4 * data.len() as u64, Ordering::Relaxed);
        let buffer = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("int-gpu input"),
                contents: bytemuck::cast_slice(data),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            });
        DeviceWords {
            buffer,
            words: words.len(),
        }
    }

    /// Submits `pipeline` over `threads` invocations and returns its
    /// output buffer without waiting for it: the result stays on the
    /// device, to be the input of the next kernel or [`GpuContext::read`]
    /// back. The queue runs submissions in order, so a later dispatch that
    /// takes this output sees it complete. Bindings as in
    /// [`GpuContext::launch`]; host inputs are uploaded first.
    pub fn dispatch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        inputs: &[Arg<'_>],
        output_words: usize,
        threads: u32,
    ) -> Result<DeviceWords, GpuError> {
        let (output, (), _) = self.encode(pipeline, inputs, output_words, threads, |_, _| ())?;
        Ok(output)
    }

    /// [`GpuContext::dispatch`] with the copy of its output to a readback
    /// buffer in the same submission; [`GpuContext::wait`] collects the
    /// words. Between the two the caller may prepare and submit the next
    /// launch, which then runs while this one is read back
    /// ([`GpuContext::pipelined`]).
    pub fn submit(
        &self,
        pipeline: &wgpu::ComputePipeline,
        inputs: &[Arg<'_>],
        output_words: usize,
        threads: u32,
    ) -> Result<Pending, GpuError> {
        let (_, staging, index) =
            self.encode(pipeline, inputs, output_words, threads, |enc, output| {
                self.copy_to_staging(enc, output, output_words)
            })?;
        Ok(Pending {
            staging,
            words: output_words,
            index,
        })
    }

    /// A mappable buffer of `words` words and the copy of `src` into it,
    /// recorded on `enc` (counted as read-back bytes).
    fn copy_to_staging(
        &self,
        enc: &mut wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        words: usize,
    ) -> wgpu::Buffer {
        let bytes = (words.max(1) * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("int-gpu readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        enc.copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
        self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
        staging
    }

    /// Checks bindings, uploads host inputs, records the dispatch and
    /// whatever `then` adds to the same command buffer (given the output
    /// buffer), and submits it; the output, `then`'s result and the
    /// submission.
    fn encode<R>(
        &self,
        pipeline: &wgpu::ComputePipeline,
        inputs: &[Arg<'_>],
        output_words: usize,
        threads: u32,
        then: impl FnOnce(&mut wgpu::CommandEncoder, &wgpu::Buffer) -> R,
    ) -> Result<(DeviceWords, R, wgpu::SubmissionIndex), GpuError> {
        for (i, a) in inputs.iter().enumerate() {
            self.fits(&format!("input {i}"), a.len())?;
        }
        self.fits("output", output_words)?;
        let _gl = self.exclusive();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        // Host inputs are uploaded here; device ones are bound as they are.
        let bound: Vec<std::borrow::Cow<'_, wgpu::Buffer>> = inputs
            .iter()
            .map(|a| match a {
                Arg::Host(w) => std::borrow::Cow::Owned(self.upload_unlocked(w).buffer),
                Arg::Device(d) => std::borrow::Cow::Borrowed(&d.buffer),
            })
            .collect();
        let out_bytes = (output_words.max(1) * 4) as u64;
        let output = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("int-gpu output"),
            size: out_bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let layout = pipeline.get_bind_group_layout(0);
        let mut entries: Vec<wgpu::BindGroupEntry<'_>> = bound
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: inputs.len() as u32,
            resource: output.as_entire_binding(),
        });
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("int-gpu bind"),
            layout: &layout,
            entries: &entries,
        });
        let groups = threads.div_ceil(WORKGROUP_SIZE).max(1);
        let per_dim = self.summary.max_workgroups_per_dim.max(1);
        let (gx, gy) = if groups <= per_dim {
            (groups, 1)
        } else {
            (per_dim, groups.div_ceil(per_dim))
        };
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("int-gpu"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("int-gpu"),
                timestamp_writes: None,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
        }
        let extra = then(&mut enc, &output);
        let index = self.queue.submit([enc.finish()]);
        self.dispatches.fetch_add(1, Ordering::Relaxed);
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Device(err.to_string()));
        }
        Ok((
            DeviceWords {
                buffer: output,
                words: output_words,
            },
            extra,
            index,
        ))
    }

    /// Waits for the work that writes `buf` and copies its words to the
    /// host.
    pub fn read(&self, buf: &DeviceWords) -> Result<Vec<u32>, GpuError> {
        let pending = {
            let _gl = self.exclusive();
            let mut enc = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("int-gpu readback"),
                });
            let staging = self.copy_to_staging(&mut enc, &buf.buffer, buf.words);
            let index = self.queue.submit([enc.finish()]);
            Pending {
                staging,
                words: buf.words,
                index,
            }
        };
        self.wait(pending)
    }

    /// Waits for a [`GpuContext::submit`]ted launch (only that submission
    /// and those before it, not later ones) and returns its output words.
    pub fn wait(&self, pending: Pending) -> Result<Vec<u32>, GpuError> {
        let _gl = self.exclusive();
        self.read_back(&pending.staging, pending.words, pending.index)
    }

    /// Runs one launch per item of `chunks` with up to
    /// [`LAUNCHES_IN_FLIGHT`] submitted at once: `submit` prepares and
    /// submits chunk `k + 1` (host encoding and upload, then compute on the
    /// device) while chunk `k`'s output is read back and handed to
    /// `consume`, in order. An error stops the loop; launches still in
    /// flight are dropped unread.
    pub fn pipelined<T>(
        &self,
        chunks: impl IntoIterator<Item = T>,
        mut submit: impl FnMut(T) -> Result<Pending, GpuError>,
        mut consume: impl FnMut(Vec<u32>) -> Result<(), GpuError>,
    ) -> Result<(), GpuError> {
        let mut in_flight: VecDeque<Pending> = VecDeque::with_capacity(LAUNCHES_IN_FLIGHT);
        for chunk in chunks {
            if in_flight.len() == LAUNCHES_IN_FLIGHT
                && let Some(p) = in_flight.pop_front()
            {
                consume(self.wait(p)?)?;
            }
            in_flight.push_back(submit(chunk)?);
            assert!(in_flight.len() <= LAUNCHES_IN_FLIGHT);
        }
        while let Some(p) = in_flight.pop_front() {
            consume(self.wait(p)?)?;
        }
        Ok(())
    }

    /// Items per launch for a kernel taking `words_per_item` words of its
    /// largest binding per item: what one binding holds, at most `cap`
    /// (the kernel's own bound on one launch's work) and at most
    /// [`GpuOptions::max_items_per_launch`] when that is set.
    pub fn items_per_launch(&self, words_per_item: usize, cap: usize) -> usize {
        let fit = self.max_binding_words() / words_per_item.max(1);
        let n = fit.clamp(1, cap.max(1));
        match self.max_items_per_launch {
            0 => n,
            m => n.min(m),
        }
    }

    /// Waits for submission `index`, maps `staging` and copies its first
    /// `words` words out.
    fn read_back(
        &self,
        staging: &wgpu::Buffer,
        words: usize,
        index: wgpu::SubmissionIndex,
    ) -> Result<Vec<u32>, GpuError> {
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            // The receiver lives until recv below returns.
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| GpuError::Device(e.to_string()))?;
        rx.recv()
            .map_err(|_| GpuError::Device("readback callback dropped".into()))?
            .map_err(|e| GpuError::Device(e.to_string()))?;
        let out = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| GpuError::Device(e.to_string()))?;
            let all: &[u32] = bytemuck::cast_slice(&view);
            all[..words].to_vec()
        };
        staging.unmap();
        Ok(out)
    }
}
