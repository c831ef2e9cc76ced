//! `--device`: where the networks run.

use burn::tensor::Device;

/// Where networks train and embed (`--device`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// The CPU, through burn's Flex backend.
    #[default]
    Cpu,
    /// The best GPU burn's wgpu backend finds (Vulkan, Metal or DirectX 12;
    /// CUBECL_WGPU_DEFAULT_DEVICE picks another adapter). Needs a dml built with
    /// `--features wgpu`.
    Wgpu,
}

impl DeviceArg {
    /// The device, checked to work: an unusable GPU is an error here, not a panic at the
    /// first tensor.
    pub fn device(self) -> anyhow::Result<Device> {
        match self {
            DeviceArg::Cpu => Ok(Device::flex()),
            DeviceArg::Wgpu => wgpu(),
        }
    }
}

#[cfg(feature = "wgpu")]
fn wgpu() -> anyhow::Result<Device> {
    use std::sync::{Arc, Mutex, PoisonError};

    use burn::tensor::{DeviceKind, Tensor};

    let device = Device::wgpu(DeviceKind::DefaultDevice);
    // burn starts a wgpu device lazily and panics when no adapter answers; one small
    // read-back brings that failure here, where it can become a message.
    let probe = || Tensor::<1>::ones([4], &device).sum().into_scalar::<f32>();
    // The first panic message on any thread (the runtime's own threads report the cause;
    // the caller's panic only says that they stopped), instead of a printed backtrace.
    let first = Arc::new(Mutex::new(None::<String>));
    let seen = Arc::clone(&first);
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.get_or_insert_with(|| panic_message(info.payload()));
    }));
    let result = std::panic::catch_unwind(probe);
    std::panic::set_hook(quiet);
    match result {
        Ok(4.0) => Ok(device),
        Ok(sum) => anyhow::bail!("--device wgpu: the GPU computed 1+1+1+1 = {sum}"),
        Err(panic) => {
            let first = first.lock().unwrap_or_else(PoisonError::into_inner).take();
            let reason = first.unwrap_or_else(|| panic_message(panic.as_ref()));
            anyhow::bail!("--device wgpu: no usable GPU adapter: {reason}")
        }
    }
}

/// The text of a panic's payload.
#[cfg(feature = "wgpu")]
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown reason".to_owned())
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() -> anyhow::Result<Device> {
    anyhow::bail!(
        "--device wgpu: this dml was built without GPU support; build it with \
         `cargo build --release -p dml-cli --features wgpu`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_the_default_and_works() {
        assert_eq!(DeviceArg::default(), DeviceArg::Cpu);
        assert!(DeviceArg::Cpu.device().is_ok());
    }

    #[cfg(not(feature = "wgpu"))]
    #[test]
    fn wgpu_without_the_feature_says_how_to_get_it() {
        let err = DeviceArg::Wgpu.device().unwrap_err().to_string();
        assert!(err.contains("--features wgpu"), "{err}");
    }
}
