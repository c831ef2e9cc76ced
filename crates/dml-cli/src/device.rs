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
    use burn::tensor::{DeviceKind, Tensor};

    let device = Device::wgpu(DeviceKind::DefaultDevice);
    // burn starts a wgpu device lazily and panics when no adapter answers; one small
    // read-back brings that failure here, where it can become a message.
    let probe = || Tensor::<1>::ones([4], &device).sum().into_scalar::<f32>();
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(probe);
    std::panic::set_hook(quiet);
    match result {
        Ok(sum) if sum == 4.0 => Ok(device),
        Ok(sum) => anyhow::bail!("--device wgpu: the GPU computed 1+1+1+1 = {sum}"),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown reason");
            anyhow::bail!("--device wgpu: no usable GPU adapter: {reason}")
        }
    }
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
