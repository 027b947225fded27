//! A spinner on stderr while the CLI waits (browser login, a non-streamed generation), drawn
//! only when stderr is a terminal and `--quiet` is off, and erased when the wait ends, so
//! that pipes and logs never see it.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Spinner(Option<ProgressBar>);

impl Spinner {
    pub fn start(quiet: bool, message: &str) -> Spinner {
        Spinner::on(!quiet && std::io::stderr().is_terminal(), message)
    }

    fn on(visible: bool, message: &str) -> Spinner {
        if !visible {
            return Spinner(None);
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
            .with_style(ProgressStyle::default_spinner())
            .with_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        Spinner(Some(bar))
    }

    #[cfg(test)]
    fn is_visible(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_when_quiet_or_not_a_terminal() {
        assert!(!Spinner::start(true, "waiting").is_visible());
        // Test runs capture stderr: not a terminal.
        if !std::io::stderr().is_terminal() {
            assert!(!Spinner::start(false, "waiting").is_visible());
        }
        let shown = Spinner::on(true, "waiting");
        assert!(shown.is_visible());
        drop(shown);
    }
}
