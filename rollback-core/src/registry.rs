//! Driver registry: driver name → constructor, filled explicitly.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::ComponentConfig;
use crate::driver::DynDriver;
use crate::error::{Error, Result};
use crate::secret::Redactor;

/// What a constructor gets besides the component's own keys.
#[derive(Debug, Clone)]
pub struct DriverEnv {
    /// Directory relative paths are resolved against.
    pub base_dir: PathBuf,
    /// Secrets of the stack.
    pub redactor: Redactor,
}

/// Builds a driver from its component config.
pub type DriverFactory = Arc<dyn Fn(&ComponentConfig, &DriverEnv) -> Result<DynDriver> + Send + Sync>;

/// The drivers a stack can use.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<String, DriverFactory>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Registry::default()
    }

    /// The drivers compiled into this build (see the `driver-*` features).
    pub fn with_default_drivers() -> Self {
        let mut r = Registry::empty();
        crate::drivers::install_default_drivers(&mut r);
        r
    }

    /// Adds or replaces a driver.
    pub fn register<F>(&mut self, name: impl Into<String>, factory: F) -> &mut Self
    where
        F: Fn(&ComponentConfig, &DriverEnv) -> Result<DynDriver> + Send + Sync + 'static,
    {
        self.factories.insert(name.into(), Arc::new(factory));
        self
    }

    /// Names of the registered drivers.
    pub fn names(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }

    /// Builds the driver of one component.
    pub fn build(&self, c: &ComponentConfig, env: &DriverEnv) -> Result<DynDriver> {
        let f = self.factories.get(&c.driver).ok_or_else(|| {
            Error::config(format!("unknown driver `{}` (known drivers: {})", c.driver, self.names().join(", ")))
                .with_component(&c.name)
        })?;
        f(c, env).map_err(|e| e.with_component(&c.name))
    }
}
