//! Breaker settings from configuration files (feature `serde`): TOML, YAML, the `config`
//! crate's environment layering, durations, unknown fields, errors naming breaker and field.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use serde::Deserialize;
use tower_breaker::{
    Backoff, CircuitBreaker, Event, Outcome, State,
    config::{BackoffConfig, BreakerConfig, KeyedConfig},
    keyed::WhenFull,
};

const ALL_TOML: &str = r#"
consecutive_failures = 5
failure_rate = 0.5
time_window = "1m30s"
min_calls = 20
slow_calls = { threshold = "500ms", rate = 0.8 }
open_backoff = { kind = "exponential", base = "5s", factor = 2, max = "5m", jitter = 0.2 }
max_open_duration = "10m"
half_open_permits = 3
half_open_successes = 2
half_open_max_wait = 45
shadow = true
"#;

const ALL_YAML: &str = r#"
consecutive_failures: 5
failure_rate: 0.5
time_window: 1m30s
min_calls: 20
slow_calls: { threshold: 500ms, rate: 0.8 }
open_backoff:
  kind: exponential
  base: 5s
  factor: 2
  max: 5m
  jitter: 0.2
max_open_duration: 10m
half_open_permits: 3
half_open_successes: 2
half_open_max_wait: 45
shadow: true
"#;

/// The same settings, through the builder's methods.
fn all_by_hand() -> tower_breaker::Builder {
    CircuitBreaker::builder("openai")
        .consecutive_failures(5)
        .failure_rate(0.5)
        .time_window(Duration::from_secs(90))
        .min_calls(20)
        .slow_calls(Duration::from_millis(500), 0.8)
        .open_backoff(
            Backoff::exponential(Duration::from_secs(5), 2.0, Duration::from_secs(300)).with_jitter(0.2),
        )
        .max_open_duration(Duration::from_secs(600))
        .half_open_permits(3)
        .half_open_successes(2)
        .half_open_max_wait(Duration::from_secs(45))
        .shadow(true)
}

/// The builder's `Debug` lists every setting: equal output, equal settings.
fn same_settings(a: &tower_breaker::Builder, b: &tower_breaker::Builder) {
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

#[test]
fn toml_sets_every_builder_setting() {
    let config: BreakerConfig = toml::from_str(ALL_TOML).unwrap();
    same_settings(&config.builder("openai").unwrap(), &all_by_hand());
    // The other alternatives: a count window, a fixed open duration, a jittered fixed wait.
    let config: BreakerConfig =
        toml::from_str("failure_rate = 0.25\ncount_window = 50\nopen_duration = \"2m\"").unwrap();
    same_settings(
        &config.builder("b").unwrap(),
        &CircuitBreaker::builder("b")
            .failure_rate(0.25)
            .count_window(50)
            .open_duration(Duration::from_secs(120)),
    );
    let config: BreakerConfig = toml::from_str(
        r#"consecutive_failures = 1
open_backoff = { kind = "fixed", wait = "30s", jitter = 0.1 }"#,
    )
    .unwrap();
    same_settings(
        &config.builder("b").unwrap(),
        &CircuitBreaker::builder("b")
            .consecutive_failures(1)
            .open_backoff(Backoff::fixed(Duration::from_secs(30)).with_jitter(0.1)),
    );
}

#[test]
fn yaml_sets_every_builder_setting() {
    let config: BreakerConfig = serde_norway::from_str(ALL_YAML).unwrap();
    assert_eq!(config, toml::from_str::<BreakerConfig>(ALL_TOML).unwrap());
    same_settings(&config.builder("openai").unwrap(), &all_by_hand());
    assert!(
        serde_norway::from_str::<BreakerConfig>("consecutive_failures: 5\nopen_durration: 30s").is_err(),
        "unknown fields are refused in YAML too"
    );
}

#[test]
fn unset_settings_are_the_builders_defaults() {
    let config: BreakerConfig = toml::from_str("consecutive_failures = 3").unwrap();
    same_settings(
        &config.builder("x").unwrap(),
        &CircuitBreaker::builder("x").consecutive_failures(3),
    );
    assert_eq!(
        toml::from_str::<BreakerConfig>("").unwrap(),
        BreakerConfig::default()
    );
}

#[test]
fn durations_are_strings_with_units_or_numbers_of_seconds() {
    let wait = |value: &str| {
        toml::from_str::<BreakerConfig>(&format!("half_open_max_wait = {value}"))
            .map(|c| c.half_open_max_wait.unwrap())
    };
    assert_eq!(wait("\"30s\"").unwrap(), Duration::from_secs(30));
    assert_eq!(wait("\"500ms\"").unwrap(), Duration::from_millis(500));
    assert_eq!(wait("\"1m30s\"").unwrap(), Duration::from_secs(90));
    assert_eq!(wait("\"1h 2m\"").unwrap(), Duration::from_secs(3720));
    assert_eq!(wait("\" 2s \"").unwrap(), Duration::from_secs(2));
    assert_eq!(wait("90").unwrap(), Duration::from_secs(90));
    assert_eq!(wait("0.25").unwrap(), Duration::from_millis(250));
    for bad in [
        "\"30\"",
        "\"soon\"",
        "\"30 parsecs\"",
        "-1",
        "-0.5",
        "\"\"",
        "true",
    ] {
        let err = wait(bad).unwrap_err().to_string();
        assert!(
            err.contains("half_open_max_wait"),
            "the parser's error names the field: {err}"
        );
    }
    let err = wait("\"30 parsecs\"").unwrap_err().to_string();
    assert!(err.contains(r#"invalid duration "30 parsecs""#), "{err}");
}

#[test]
fn unknown_fields_are_refused_at_every_level() {
    for text in [
        "consecutive_failure = 5",
        "consecutive_failures = 5\nslow_calls = { threshold = \"1s\", rate = 0.5, window = 3 }",
        "consecutive_failures = 5\nopen_backoff = { kind = \"fixed\", wait = \"1s\", factor = 2 }",
        "consecutive_failures = 5\nopen_backoff = { kind = \"exponential\", base = \"1s\", factor = 2, max = \"9s\", cap = \"9s\" }",
        "consecutive_failures = 5\nopen_backoff = { kind = \"linear\", base = \"1s\" }",
    ] {
        assert!(toml::from_str::<BreakerConfig>(text).is_err(), "{text}");
    }
    for text in [
        "max_key = 10",
        "[template]\nconsecutive_failure = 5",
        "[overrides.gpt-4o]\nconsecutive_failure = 5",
        "when_full = \"evict\"",
    ] {
        assert!(toml::from_str::<KeyedConfig>(text).is_err(), "{text}");
    }
}

#[test]
fn errors_name_the_breaker_and_the_field() {
    let err_of = |text: &str| {
        toml::from_str::<BreakerConfig>(text)
            .unwrap()
            .builder("openai")
            .unwrap_err()
    };
    for (text, field) in [
        ("failure_rate = 1.5", "failure_rate"),
        ("consecutive_failures = 0", "consecutive_failures"),
        ("", "trip rules"),
        (
            "consecutive_failures = 1\ncount_window = 10\ntime_window = \"1m\"",
            "count_window and time_window",
        ),
        (
            "consecutive_failures = 1\nopen_duration = \"1s\"\nopen_backoff = { kind = \"fixed\", wait = \"1s\" }",
            "open_duration and open_backoff",
        ),
        ("consecutive_failures = 1\nopen_duration = 0", "open_duration"),
        (
            "consecutive_failures = 1\nopen_backoff = { kind = \"fixed\", wait = 0 }",
            "open_backoff.wait",
        ),
        (
            "consecutive_failures = 1\nopen_backoff = { kind = \"exponential\", base = 0, factor = 2, max = 9 }",
            "open_backoff.base",
        ),
        (
            "consecutive_failures = 1\nopen_backoff = { kind = \"exponential\", base = 1, factor = 0.5, max = 9 }",
            "open_backoff.factor",
        ),
        (
            "consecutive_failures = 1\nopen_backoff = { kind = \"exponential\", base = 10, factor = 2, max = 9 }",
            "open_backoff.max",
        ),
        (
            "consecutive_failures = 1\nopen_backoff = { kind = \"fixed\", wait = 1, jitter = 2 }",
            "open_backoff.jitter",
        ),
        (
            "slow_calls = { threshold = \"1s\", rate = 1.5 }",
            "slow_calls.rate",
        ),
        (
            "consecutive_failures = 1\nhalf_open_permits = 0",
            "half_open_permits",
        ),
        (
            "consecutive_failures = 1\nhalf_open_max_wait = 0",
            "half_open_max_wait",
        ),
    ] {
        let err = err_of(text);
        assert_eq!((err.breaker(), err.setting()), (Some("openai"), field), "{text}");
        assert!(err.to_string().ends_with(r#" (breaker "openai")"#), "{err}");
    }
    let err = err_of("failure_rate = 1.5");
    assert!(
        err.to_string()
            .starts_with("invalid circuit breaker config: failure_rate "),
        "{err}"
    );
    // The builder's own errors name the breaker too.
    let err = CircuitBreaker::builder("anthropic").build().unwrap_err();
    assert_eq!((err.breaker(), err.setting()), (Some("anthropic"), "trip rules"));
}

#[test]
fn keyed_errors_name_the_keys_breaker() {
    let err_of = |text: &str| {
        toml::from_str::<KeyedConfig>(text)
            .unwrap()
            .build::<String>("openai")
            .unwrap_err()
    };
    let err = err_of("[template]\nconsecutive_failures = 3\n[overrides.gpt-4o]\nfailure_rate = 2.0");
    assert_eq!(
        (err.breaker(), err.setting()),
        (Some("openai:gpt-4o"), "failure_rate")
    );
    let err = err_of("[template]\nfailure_rate = 2.0");
    assert_eq!((err.breaker(), err.setting()), (Some("openai"), "failure_rate"));
    let err = err_of("max_keys = 0\n[template]\nconsecutive_failures = 3");
    assert_eq!((err.breaker(), err.setting()), (Some("openai"), "max_keys"));
    let err = err_of("idle_timeout = 0\n[template]\nconsecutive_failures = 3");
    assert_eq!((err.breaker(), err.setting()), (Some("openai"), "idle_timeout"));
    // An override's key that the registry's key type cannot hold.
    let err = toml::from_str::<KeyedConfig>(
        "[template]\nconsecutive_failures = 3\n[overrides.eighty]\nconsecutive_failures = 9",
    )
    .unwrap()
    .build::<u16>("ports")
    .unwrap_err();
    assert_eq!(
        (err.breaker(), err.setting()),
        (Some("ports:eighty"), "overrides")
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_overrides_inherit_the_template() {
    let config: KeyedConfig = toml::from_str(
        r#"
        max_keys = 2
        idle_timeout = "5m"
        when_full = "reject"
        [template]
        consecutive_failures = 2
        open_duration = "30s"
        [overrides.embeddings]
        consecutive_failures = 4
        "#,
    )
    .unwrap();
    assert_eq!(config.when_full, Some(WhenFull::Reject));
    assert_eq!(
        config.for_key("embeddings").open_duration,
        Some(Duration::from_secs(30))
    );
    let registry = config.build::<String>("openai").unwrap();
    assert_eq!(registry.max_keys(), 2);
    for _ in 0..2 {
        registry.try_acquire("chat").unwrap().record(Outcome::Failure);
        registry
            .try_acquire("embeddings")
            .unwrap()
            .record(Outcome::Failure);
    }
    assert_eq!(registry.get("chat").unwrap().state(), State::Open);
    assert_eq!(
        registry.get("embeddings").unwrap().state(),
        State::Closed,
        "its own rule: 4"
    );
    for _ in 0..2 {
        registry
            .try_acquire("embeddings")
            .unwrap()
            .record(Outcome::Failure);
    }
    let Err(tower_breaker::keyed::KeyedError::Open(open)) = registry.try_acquire("embeddings") else {
        panic!("embeddings' breaker is open");
    };
    assert_eq!(open.name(), "openai:embeddings");
    assert_eq!(
        open.retry_after(),
        Some(Duration::from_secs(30)),
        "the template's open duration"
    );
    // `when_full = "reject"` with both keys open: a third key is refused.
    assert!(registry.try_acquire("moderation").is_err());
}

#[test]
fn inherit_takes_alternatives_together() {
    let base: BreakerConfig =
        toml::from_str("failure_rate = 0.5\ncount_window = 100\nopen_duration = \"30s\"\nmin_calls = 5")
            .unwrap();
    let over: BreakerConfig = toml::from_str(
        "time_window = \"1m\"\nopen_backoff = { kind = \"exponential\", base = \"1s\", factor = 2, max = \"1m\" }",
    )
    .unwrap();
    let merged = over.inherit(&base);
    assert_eq!(
        (merged.count_window, merged.time_window),
        (None, Some(Duration::from_secs(60)))
    );
    assert_eq!(merged.open_duration, None);
    assert!(matches!(
        merged.open_backoff,
        Some(BackoffConfig::Exponential { .. })
    ));
    assert_eq!((merged.failure_rate, merged.min_calls), (Some(0.5), Some(5)));
    merged.validate("x").unwrap();
}

/// The application's settings in the examples: breakers by name.
#[derive(Debug, Deserialize)]
struct Settings {
    breakers: BTreeMap<String, BreakerConfig>,
    #[serde(default)]
    models: KeyedConfig,
}

const FILE: &str = r#"
[breakers.openai]
consecutive_failures = 5
open_duration = "30s"

[breakers.anthropic]
failure_rate = 0.5

[models.template]
consecutive_failures = 3
"#;

/// `config`'s layering: a file, then environment variables over it (given as a map here, as
/// `std::env::vars` would give them: no process-wide variable is set).
fn layered(vars: &[(&str, &str)]) -> Settings {
    let env: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    config::Config::builder()
        .add_source(config::File::from_str(FILE, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("APP")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        )
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap()
}

#[test]
fn an_environment_variable_overrides_the_file() {
    let file_only = layered(&[]);
    assert_eq!(
        file_only.breakers["openai"].open_duration,
        Some(Duration::from_secs(30))
    );

    let settings = layered(&[
        ("APP__BREAKERS__OPENAI__OPEN_DURATION", "2m"),
        ("APP__BREAKERS__OPENAI__HALF_OPEN_SUCCESSES", "3"),
        ("APP__BREAKERS__ANTHROPIC__MIN_CALLS", "40"),
        ("APP__MODELS__TEMPLATE__OPEN_DURATION", "15"),
        ("OTHER__BREAKERS__OPENAI__OPEN_DURATION", "9s"),
    ]);
    let openai = &settings.breakers["openai"];
    assert_eq!(
        openai.open_duration,
        Some(Duration::from_secs(120)),
        "the variable wins"
    );
    assert_eq!(
        openai.consecutive_failures,
        Some(5),
        "the file's other settings stay"
    );
    assert_eq!(openai.half_open_successes, Some(3));
    assert_eq!(settings.breakers["anthropic"].min_calls, Some(40));
    assert_eq!(
        settings.models.template.open_duration,
        Some(Duration::from_secs(15))
    );
    same_settings(
        &openai.builder("openai").unwrap(),
        &CircuitBreaker::builder("openai")
            .consecutive_failures(5)
            .open_duration(Duration::from_secs(120))
            .half_open_successes(3),
    );
}

#[test]
fn an_environment_variable_with_a_typo_is_refused() {
    let env: HashMap<String, String> = [(
        "APP__BREAKERS__OPENAI__OPEN_DURATON".to_string(),
        "2m".to_string(),
    )]
    .into();
    let result = config::Config::builder()
        .add_source(config::File::from_str(FILE, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("APP")
                .separator("__")
                .source(Some(env)),
        )
        .build()
        .unwrap()
        .try_deserialize::<Settings>();
    let err = result.unwrap_err().to_string();
    assert!(err.contains("open_duraton"), "{err}");
}

#[test]
fn a_config_serialises_back_to_the_same_config() {
    let config: BreakerConfig = toml::from_str(ALL_TOML).unwrap();
    let text = toml::to_string(&config).unwrap();
    assert!(text.contains("time_window = \"1m 30s\""), "{text}");
    assert_eq!(toml::from_str::<BreakerConfig>(&text).unwrap(), config);
    let keyed: KeyedConfig = toml::from_str(
        "when_full = \"overflow\"\n[template]\nconsecutive_failures = 3\n[overrides.a]\nmin_calls = 2",
    )
    .unwrap();
    assert_eq!(
        toml::from_str::<KeyedConfig>(&toml::to_string(&keyed).unwrap()).unwrap(),
        keyed
    );
}

#[tokio::test(start_paused = true)]
async fn apply_keeps_the_builders_name_and_listeners() {
    let transitions = Arc::new(AtomicU32::new(0));
    let seen = transitions.clone();
    let builder = CircuitBreaker::builder("payments")
        .consecutive_failures(9)
        .half_open_successes(2)
        .on_event(move |e| {
            if matches!(e, Event::Transition { .. }) {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        });
    let config: BreakerConfig = toml::from_str("consecutive_failures = 1").unwrap();
    let breaker = config.apply(builder).unwrap().build().unwrap();
    assert_eq!(breaker.name(), "payments");
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(breaker.state(), State::Open, "the config's rule: 1");
    assert_eq!(transitions.load(Ordering::Relaxed), 1, "the builder's listener");
    tokio::time::advance(Duration::from_secs(30)).await;
    breaker.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(
        breaker.state(),
        State::HalfOpen,
        "the builder's setting kept: 2 successes"
    );
}
