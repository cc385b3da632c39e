"""The base config, which holds every default.

Experiment files start from `get_config()` here and override a handful of fields. The config is
locked, so an unknown key is an error; `jaxtrain.validation.validate_config` catches impossible
values before anything is compiled and names the field.
"""

import ml_collections

from jaxtrain.models.registry import model_config

OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adam", "adamw", "adagrad", "rmsprop", "muon")
SCHEDULE_NAMES = ("constant", "piecewise", "exponential", "cosine", "warmup_cosine", "sgdr")
CLASS_WEIGHTING_NAMES = ("none", "balanced", "given")
SAMPLING_NAMES = ("uniform", "balanced")
DROPOUT_RNG_NAMES = ("threefry2x32", "rbg", "unsafe_rbg")


def get_config() -> ml_collections.ConfigDict:
    """Returns the base config with every default."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    # K > 1 trains K independent models (seeds seed..seed+K-1) at once with jax.vmap.
    c.num_seeds = 1
    c.total_steps = 1000
    c.batch_size = 128  # global batch per optimizer update, over all devices and processes
    c.eval_batch_size = 1000
    c.log_every = 100
    c.eval_every = 500  # validation-split evaluation; the test split is evaluated once at the end
    c.eval_steps = 0  # batches per validation evaluation; 0: the whole split (smoke runs: a few)
    c.num_devices = -1  # -1: all devices; N: the first N (a data-parallel mesh)
    c.init_from = ""  # warm start: a run dir or checkpoint to load params (not optimizer) from
    # Persistent XLA compilation cache: "auto" ($JAXTRAIN_COMPILE_CACHE or
    # ~/.cache/jaxtrain/xla), a directory, or "off".
    c.compile_cache_dir = "auto"
    # PRNG for dropout: "threefry2x32" (JAX's default; the same bits on any mesh, process count
    # and XLA version) or "rbg"/"unsafe_rbg" (XLA's RngBitGenerator, meant to be cheaper per bit on
    # accelerators; its stream may change with the sharding or the XLA version). Param init
    # always uses threefry. Measured on 2 CPU cores: no faster for the dropout-0.1 GPT step
    # (benchmarks/RESULTS.md); there all of dropout costs ~10% of the step.
    c.dropout_rng = "threefry2x32"
    # N > 0: every N steps (and at step 0) append per-leaf fingerprints of params, gradient,
    # optimizer state and batch to WORKDIR/fingerprints.jsonl, for `jaxtrain diverge`. 0: off.
    # Changes no number of the run; each costs about one train step (N >= 200: < 1%).
    c.fingerprint_every = 0

    c.mesh = ml_collections.ConfigDict()
    # Device mesh axes (data, fsdp, tensor); -1 means "the remaining devices" (at most one -1).
    c.mesh.shape = (-1, 1, 1)
    # Logical parameter axis -> mesh axis ("" replicates). Params are annotated with logical
    # names (see jaxtrain/models); the batch is split over data x fsdp.
    c.mesh.rules = (
        ("vocab", "tensor"),
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("kv_heads", "tensor"),  # llama's key/value heads ("": replicate them when fewer)
        ("kv", ""),
        ("classes", ""),
        ("norm", ""),
        ("conv_in", ""),
        ("conv_out", "fsdp"),
        ("kernel_h", ""),
        ("kernel_w", ""),
    )

    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""  # host:port of process 0; or $JAXTRAIN_COORDINATOR
    c.distributed.num_processes = 1  # or $JAXTRAIN_NUM_PROCESSES
    c.distributed.process_id = -1  # -1: $JAXTRAIN_PROCESS_ID
    c.distributed.auto = False  # let JAX detect everything (TPU VMs, SLURM)
    c.distributed.cpu_devices_per_process = 0  # CPU-only runs: fake devices per process
    c.distributed.timeout_s = 120  # joining the coordinator fails after this, never hangs

    c.data = ml_collections.ConfigDict()
    c.data.name = "fashion_mnist"
    c.data.data_dir = ""  # "": $JAXTRAIN_DATA_DIR, else ./.data/tfds
    c.data.validation_size = 5000  # carved deterministically from the end of the train split
    c.data.prefetch = 2  # batches read ahead in a background thread
    c.data.in_memory = True  # decode each split into RAM once (fast random access; small sets)
    # Text: a tokenizer.json path, or "minilm" (the pretrained MiniLM WordPiece tokenizer).
    c.data.tokenizer = ""
    c.data.seq_len = 128  # tokens per example (classification: truncated/padded to this)
    c.data.augment_crop_pad = 0  # images: random crop after zero-padding by this many pixels
    c.data.augment_flip = False  # images: random horizontal flip
    c.data.sampling = "uniform"  # or "balanced": resample train so every class is equally likely
    # Language modeling: "none" cuts the concatenated documents into seq_len + 1 windows;
    # "documents" packs whole documents into rows, and the model attends only within each one
    # (positions restart per document; cross-document targets are masked). jaxtrain/data/packing.py
    c.data.packing = "none"

    # The model family's own fields (jaxtrain/models/registry.py); another family:
    # c.model = model_config("gpt", d_model=384, ...).
    c.model = model_config("cnn")

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 0
    c.optimizer.weight_decay = 0.0  # decoupled for adamw, L2 for the rest; skips biases/scales
    c.optimizer.clip_norm = 0.0  # global-norm clipping; 0 turns it off
    # Micro-batches per step; the update equals the big batch's. "auto": the fewest whose compiled
    # step fits memory_budget_gb (jaxtrain/batch_fit.py). The field holds an int or "auto".
    c.optimizer.grad_accum_steps = ml_collections.FieldReference(1, field_type=object)
    # grad_accum_steps=auto: device memory per device, in GB (1e9 bytes); 0: the device's own
    # (GPU/TPU: the allocator's limit; CPU: the host's RAM / local devices).
    c.optimizer.memory_budget_gb = 0.0
    c.optimizer.momentum = 0.9  # momentum, nesterov, rmsprop
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.end_lr_factor = 0.0  # cosine-family: final lr as a fraction of the peak
    c.optimizer.decay_rate = 0.1  # piecewise: factor at each boundary; exponential: per period
    c.optimizer.boundaries = (0.5, 0.75)  # piecewise: fractions of total_steps
    c.optimizer.decay_steps = 1000  # exponential: steps per decay_rate factor
    c.optimizer.restart_period = 1000  # sgdr: steps in the first cycle
    c.optimizer.restart_mult = 2.0  # sgdr: each cycle is this much longer than the previous
    # Exponential moving average of the weights, updated after every step:
    # ema = decay * ema + (1 - decay) * params, starting at the initial params. Validation, test,
    # `eval`, `export` and `sample` then use the average. 0 turns it off; e.g. 0.999.
    c.optimizer.ema_decay = 0.0

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 1000  # steps; also saved at the end and on SIGTERM/SIGINT
    c.checkpoint.keep = 2  # the newest N
    c.checkpoint.keep_best = 1  # plus the best N by best_metric (0: none)
    c.checkpoint.best_metric = "validation/accuracy"
    c.checkpoint.best_mode = "max"  # max or min
    c.checkpoint.async_save = True  # the loop blocks only while arrays are copied to host
    # When checkpoints were written but none restores (all moved to checkpoints_damaged/),
    # training stops with an error; True trains from step 0 instead, on purpose.
    c.checkpoint.allow_fresh_start = False

    c.early_stopping = ml_collections.ConfigDict()
    c.early_stopping.patience = 0  # evaluations without improvement; 0 turns it off
    c.early_stopping.min_delta = 0.0  # smallest change of checkpoint.best_metric that counts
    # The metric and its direction are checkpoint.best_metric / best_mode, so the best
    # checkpoint (tested at the end) is the one early stopping picked.

    c.drift = ml_collections.ConfigDict()
    # Drift monitoring (jaxtrain/drift.py) on samples of this many examples, evenly spaced over a
    # split: every evaluation logs drift/... of validation against a train sample; the end writes
    # WORKDIR/drift_reference.json (the validation sample) for `python -m jaxtrain drift`. 0: off.
    c.drift.num_examples = 512
    c.profile = ml_collections.ConfigDict()
    # A jax.profiler trace (TensorBoard's profile plugin) of steps start_step+1 ..
    # start_step+num_steps into WORKDIR/profile/, by process 0. num_steps=0 turns it off;
    # start_step skips compilation and warm-up.
    c.profile.start_step = 10
    c.profile.num_steps = 0

    c.loss = ml_collections.ConfigDict()
    c.loss.label_smoothing = 0.0
    c.loss.class_weighting = "none"  # none, balanced (n / (K * n_k) from train) or given
    c.loss.class_weights = (1.0,)  # with class_weighting=given: one weight per class

    # Knowledge distillation (jaxtrain/distill.py): loss = alpha * T^2 * KL(teacher_T || student_T)
    # + (1 - alpha) * the label loss, with softmaxes at temperature T. The teacher is frozen.
    c.distill = ml_collections.ConfigDict()
    # A finished jaxtrain run dir (its best, else its latest checkpoint); "": off.
    c.distill.teacher = ""
    c.distill.alpha = 0.5  # weight of the soft (teacher) loss, in [0, 1]
    c.distill.temperature = 4.0  # T > 0

    # Gradual magnitude pruning with Zhu & Gupta's cubic schedule (jaxtrain/prune.py).
    c.prune = ml_collections.ConfigDict()
    c.prune.target_sparsity = 0.0  # final fraction of zeros per weight matrix, in [0, 1); 0: off
    c.prune.start_step = 0  # sparsity 0 until here
    c.prune.end_step = -1  # target sparsity from here on; -1: total_steps
    c.prune.every = 100  # steps between mask updates
    c.prune.pattern = "unstructured"  # or "2:4": 2 of every 4 input-channel weights (s = 0.5)

    # LoRA fine-tuning (jaxtrain/lora.py): targeted weights W run as W + (alpha / r) A B with
    # A [in, r], B [r, out] (B starts at 0); only the adapters and `trainable` params train and
    # have optimizer state. Patterns are fnmatch globs over param paths such as
    # "encoder/layers/0/query/kernel" ("*" also matches "/"); a pattern matching nothing is an
    # error that lists the model's params.
    c.finetune = ml_collections.ConfigDict()
    c.finetune.lora_rank = 0  # r; 0: off (every param trains)
    c.finetune.lora_alpha = 16.0  # the update is scaled by lora_alpha / lora_rank
    c.finetune.lora_targets = ()  # e.g. ("*/query/kernel", "*/value/kernel")
    # Params trained in full beside the adapters, e.g. ("head/*",): a new classifier head starts
    # at random and must train. Everything else stays frozen. Only used with lora_rank > 0.
    c.finetune.trainable = ()
    return c
