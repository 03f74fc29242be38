//! [`Status`]: the outcome of running a plugin. Being unschedulable is an ordinary outcome,
//! not an error, so plugins return a value with a [`Code`] rather than `Result`.

use std::fmt;

/// What a plugin decided (upstream `framework.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// Go on.
    Success,
    /// Something failed internally; the pod is retried with backoff.
    Error,
    /// The pod does not fit here now, but preemption might make it fit.
    Unschedulable,
    /// The pod does not fit here and preemption would not help.
    UnschedulableAndUnresolvable,
    /// A Permit plugin wants the binding to wait.
    Wait,
    /// The plugin has nothing to do for this pod (PreFilter/PreScore: skip its Filter/Score).
    Skip,
    /// The pod waits for something outside the scheduler (treated as unschedulable).
    Pending,
}

/// A plugin's outcome: a code, reasons, and the plugin it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    code: Code,
    reasons: Vec<String>,
    plugin: &'static str,
}

impl Default for Status {
    fn default() -> Self {
        Status::success()
    }
}

impl Status {
    /// A status with a code and reasons.
    pub fn new(code: Code, reasons: Vec<String>) -> Status {
        Status {
            code,
            reasons,
            plugin: "",
        }
    }

    /// Success.
    pub const fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    /// Skip.
    pub const fn skip() -> Status {
        Status {
            code: Code::Skip,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    /// An internal error.
    pub fn error(message: impl Into<String>) -> Status {
        Status::new(Code::Error, vec![message.into()])
    }

    /// Unschedulable for one reason.
    pub fn unschedulable(reason: impl Into<String>) -> Status {
        Status::new(Code::Unschedulable, vec![reason.into()])
    }

    /// Unschedulable and unresolvable for one reason.
    pub fn unresolvable(reason: impl Into<String>) -> Status {
        Status::new(Code::UnschedulableAndUnresolvable, vec![reason.into()])
    }

    /// Wait (Permit).
    pub fn wait() -> Status {
        Status::new(Code::Wait, Vec::new())
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The reasons.
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }

    /// The reasons joined by `, ` (upstream `Status.Message`).
    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }

    /// The plugin that returned this status (empty until the framework records it).
    pub fn plugin(&self) -> &'static str {
        self.plugin
    }

    /// Record the plugin that returned this status.
    pub fn with_plugin(mut self, plugin: &'static str) -> Status {
        self.plugin = plugin;
        self
    }

    /// Whether the code is Success.
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    /// Whether the code is Skip.
    pub fn is_skip(&self) -> bool {
        self.code == Code::Skip
    }

    /// Whether the pod was rejected (Unschedulable, UnschedulableAndUnresolvable or Pending).
    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable | Code::Pending
        )
    }

    /// Whether this is an internal error.
    pub fn is_error(&self) -> bool {
        self.code == Code::Error
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message())
    }
}
