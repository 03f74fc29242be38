//! A name-keyed registry of control loops (upstream kube-controller-manager's controller
//! descriptors): each loop registers a name, optional aliases, whether it runs by default,
//! and a start function. Duplicate names are refused when registering, and the
//! `--controllers` list (`*`, `name`, `-name`) is resolved against it once at start-up, so a
//! typo is an error rather than a loop that silently never runs.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future a start function returns: the loop, running until its context is cancelled.
pub type Running = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Starts one loop with a context `C` (clients, informers, configuration, stop token).
pub type StartFn<C> = Arc<dyn Fn(C) -> Running + Send + Sync>;

/// One registered loop.
pub struct Descriptor<C> {
    /// Canonical name (`deployment-controller`).
    pub name: &'static str,
    /// Other names accepted in `--controllers` (upstream's short names: `deployment`).
    pub aliases: &'static [&'static str],
    /// Whether `*` includes it.
    pub enabled_by_default: bool,
    /// Start function.
    pub start: StartFn<C>,
}

impl<C> Clone for Descriptor<C> {
    fn clone(&self) -> Self {
        Descriptor {
            name: self.name,
            aliases: self.aliases,
            enabled_by_default: self.enabled_by_default,
            start: self.start.clone(),
        }
    }
}

impl<C> Descriptor<C> {
    /// A descriptor enabled by default.
    pub fn new<F, Fut>(name: &'static str, aliases: &'static [&'static str], start: F) -> Self
    where
        F: Fn(C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Descriptor {
            name,
            aliases,
            enabled_by_default: true,
            start: Arc::new(move |ctx| Box::pin(start(ctx))),
        }
    }

    /// Leave it out of `*` (it runs only when named).
    pub fn disabled_by_default(mut self) -> Self {
        self.enabled_by_default = false;
        self
    }

    fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }
}

/// Why registering or selecting failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// Two loops claim one name.
    #[error("controller name {0:?} is registered twice")]
    Duplicate(String),
    /// `--controllers` names a loop nobody registered.
    #[error("unknown controller {0:?} in --controllers (known: {1})")]
    Unknown(String, String),
}

/// Registered loops, in registration order.
pub struct Registry<C> {
    entries: Vec<Descriptor<C>>,
}

impl<C> Default for Registry<C> {
    fn default() -> Self {
        Registry {
            entries: Vec::new(),
        }
    }
}

impl<C> Registry<C> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a loop; its name and aliases must be new.
    pub fn register(&mut self, descriptor: Descriptor<C>) -> Result<(), RegistryError> {
        for name in std::iter::once(&descriptor.name).chain(descriptor.aliases) {
            if self.entries.iter().any(|d| d.answers_to(name)) {
                return Err(RegistryError::Duplicate((*name).to_owned()));
            }
        }
        self.entries.push(descriptor);
        Ok(())
    }

    /// Canonical names, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|d| d.name).collect()
    }

    /// The loops `--controllers` selects, with upstream's rules: a loop runs when it is named,
    /// never when it is named with a leading `-`, and otherwise when `*` is given and it is
    /// enabled by default. An empty list means `*`.
    pub fn select(&self, spec: &[String]) -> Result<Vec<Descriptor<C>>, RegistryError> {
        let spec: Vec<&str> = spec
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let spec = if spec.is_empty() { vec!["*"] } else { spec };
        let mut on = HashSet::new();
        let mut off = HashSet::new();
        let mut star = false;
        for item in spec {
            if item == "*" {
                star = true;
                continue;
            }
            let (negated, name) = match item.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, item),
            };
            let Some(d) = self.entries.iter().find(|d| d.answers_to(name)) else {
                return Err(RegistryError::Unknown(
                    name.to_owned(),
                    self.names().join(", "),
                ));
            };
            if negated {
                off.insert(d.name);
            } else {
                on.insert(d.name);
            }
        }
        Ok(self
            .entries
            .iter()
            .filter(|d| {
                !off.contains(d.name) && (on.contains(d.name) || (star && d.enabled_by_default))
            })
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry<()> {
        let mut r = Registry::new();
        r.register(Descriptor::new("a-controller", &["a"], |_| async {}))
            .unwrap();
        r.register(Descriptor::new("b-controller", &[], |_| async {}))
            .unwrap();
        r.register(Descriptor::new("c-controller", &["c"], |_| async {}).disabled_by_default())
            .unwrap();
        r
    }

    fn selected(spec: &[&str]) -> Result<Vec<&'static str>, RegistryError> {
        let spec: Vec<String> = spec.iter().map(|s| s.to_string()).collect();
        Ok(registry().select(&spec)?.iter().map(|d| d.name).collect())
    }

    #[test]
    fn duplicate_names_and_aliases_are_refused() {
        let mut r = registry();
        let dup = r.register(Descriptor::new("a-controller", &[], |_| async {}));
        assert_eq!(dup, Err(RegistryError::Duplicate("a-controller".into())));
        let alias = r.register(Descriptor::new("z", &["c"], |_| async {}));
        assert_eq!(alias, Err(RegistryError::Duplicate("c".into())));
        assert_eq!(r.names().len(), 3);
    }

    #[test]
    fn controllers_flag_follows_upstream_syntax() {
        assert_eq!(selected(&[]).unwrap(), ["a-controller", "b-controller"]);
        assert_eq!(selected(&["*"]).unwrap(), ["a-controller", "b-controller"]);
        assert_eq!(selected(&["*,-a"]).unwrap(), ["b-controller"]);
        assert_eq!(
            selected(&["*", "c"]).unwrap(),
            ["a-controller", "b-controller", "c-controller"]
        );
        assert_eq!(selected(&["b-controller"]).unwrap(), ["b-controller"]);
        assert_eq!(selected(&["a", "-a"]).unwrap(), Vec::<&str>::new());
        assert!(matches!(
            selected(&["*,-nope"]),
            Err(RegistryError::Unknown(n, _)) if n == "nope"
        ));
    }
}
