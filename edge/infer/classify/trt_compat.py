"""The one place that knows TensorRT 8.2 (JetPack 4.6, the Nano) from TensorRT 10 (Orin, x86).

About ten calls differ; each is chosen here by feature (``hasattr``), never by version
number, so 8.5/8.6, which have both APIs, take the newer one:

| job                 | TensorRT 8.2                          | TensorRT 10                               |
|---------------------|---------------------------------------|-------------------------------------------|
| explicit batch      | ``EXPLICIT_BATCH`` network flag       | always on (flag deprecated or gone)       |
| workspace limit     | ``config.max_workspace_size``         | ``config.set_memory_pool_limit``          |
| I/O description     | bindings: index, ``binding_is_input`` | tensor names, ``get_tensor_mode``         |
| input shape         | ``context.set_binding_shape(index)``  | ``context.set_input_shape(name)``         |
| output shape        | ``context.get_binding_shape(index)``  | ``context.get_tensor_shape(name)``        |
| run                 | ``execute_async_v2(bindings)``        | ``set_tensor_address`` + ``execute_async_v3`` |
| build progress      | none (the caller prints elapsed time) | ``IProgressMonitor``                      |

Only ``trt`` module objects go in; nothing is imported here, so this file imports
anywhere (and its pure parts are tested without TensorRT).
"""


def network_flags(trt):
    """Flags for ``builder.create_network``: explicit batch, which 8.x needs for ONNX."""
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "EXPLICIT_BATCH", None)
    return 0 if flag is None else 1 << int(flag)


def set_workspace(trt, config, nbytes):
    """Cap the builder's scratch memory (the Nano shares its 4 GB between CPU and GPU)."""
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(nbytes))
    else:
        config.max_workspace_size = int(nbytes)


def has_fast(builder, precision):
    """Whether the GPU runs ``fp16`` / ``int8`` natively (the Nano: FP16 yes, INT8 no)."""
    return bool(getattr(builder, "platform_has_fast_" + precision, True))


def set_calibration_profile(config, profile):
    """INT8 calibration of a dynamic-shape network needs a profile to calibrate at."""
    if hasattr(config, "set_calibration_profile"):
        config.set_calibration_profile(profile)


def io_tensors(trt, engine):
    """The engine's inputs and outputs: list of ``(name, is_input, shape, numpy dtype)`` in binding order."""
    if hasattr(engine, "num_io_tensors"):
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        return [(n, engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT, tuple(engine.get_tensor_shape(n)),
                 trt.nptype(engine.get_tensor_dtype(n))) for n in names]
    return [(engine.get_binding_name(i), engine.binding_is_input(i), tuple(engine.get_binding_shape(i)),
             trt.nptype(engine.get_binding_dtype(i))) for i in range(engine.num_bindings)]


def set_input_shape(context, index, name, shape):
    """Set the runtime shape of a dynamic input (binding ``index`` / tensor ``name``)."""
    if hasattr(context, "set_input_shape"):
        ok = context.set_input_shape(name, tuple(shape))
    else:
        ok = context.set_binding_shape(index, tuple(shape))
    if ok is False:
        raise ValueError("TensorRT rejected input shape %s for %r (outside the engine's profile)" % (shape, name))


def tensor_shape(context, index, name):
    """The shape of binding ``index`` / tensor ``name`` for the input shapes set on ``context``
    (an output's size follows its inputs': the detector's anchors grow with the frame)."""
    if hasattr(context, "get_tensor_shape"):
        return tuple(context.get_tensor_shape(name))
    return tuple(context.get_binding_shape(index))


def execute(context, tensors, addresses, stream_handle):
    """Enqueue one inference; ``addresses`` are device pointers in the order of ``io_tensors``."""
    if hasattr(context, "execute_async_v3"):
        for (name, _, _, _), address in zip(tensors, addresses):
            context.set_tensor_address(name, int(address))
        ok = context.execute_async_v3(stream_handle)
    else:
        ok = context.execute_async_v2(bindings=[int(a) for a in addresses], stream_handle=stream_handle)
    if not ok:
        raise RuntimeError("TensorRT failed to enqueue the inference")


def attach_progress(trt, config, report):
    """Report build phases through ``IProgressMonitor`` where it exists (TensorRT 8.5+/10).

    Returns the monitor (the caller must keep it alive for the build: TensorRT does not
    own it), or None on older TensorRT, where the caller prints elapsed time instead.
    """
    if not hasattr(trt, "IProgressMonitor") or not hasattr(config, "progress_monitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.parents = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            depth = self.parents[parent_phase] + 1 if parent_phase in self.parents else 0
            self.parents[phase_name] = depth
            if depth <= 1:  # deeper phases come by the hundred
                report("%s%s (%d steps)" % ("  " * depth, phase_name, num_steps))

        def step_complete(self, phase_name, step):
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            self.parents.pop(phase_name, None)

    monitor = Monitor()
    config.progress_monitor = monitor
    return monitor
