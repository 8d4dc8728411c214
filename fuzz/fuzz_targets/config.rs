//! Config loading on arbitrary text (YAML, and JSON since JSON is YAML), with `${ENV}`
//! substitution from a fake environment in which every variable whose name has an even length
//! is set.
//!
//! Beyond "never panics": `from_str` succeeds exactly when `check_str` finds no problem, every
//! problem names a message, and a loaded config can be shown (secrets put back as written).
#![no_main]

use colloquium_config::{check_str, from_str};
use libfuzzer_sys::fuzz_target;

fn env(name: &str) -> Option<String> {
    (name.len() % 2 == 0).then(|| format!("value-of-{name}"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let checked = check_str(text, &env);
    let loaded = from_str(text, &env);
    match (&checked, &loaded) {
        (Ok(checked), Ok(config)) => {
            assert!(checked.errors.is_empty());
            let _ = config.shown();
        }
        (Ok(checked), Err(_)) => {
            assert!(!checked.errors.is_empty() || checked.config.is_none());
            assert!(checked.errors.iter().all(|e| !e.message.is_empty()));
        }
        (Err(_), Err(_)) => {}
        (Err(e), Ok(_)) => panic!("check_str failed ({e}) but from_str loaded"),
    }
});
