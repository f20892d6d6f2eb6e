//! The `[kpi]` section of site models and the state models of standards:
//! the demo plant's definitions parse, and every mistake is reported at its
//! file, line and field with a hint.

use gantry_kpi::config::{self, KpiConfig};
use gantry_kpi::{Counting, TimeBucket};
use gantry_model::{DEMO_PLANT_TOML, ModelError, PlantModel};

const MODEL: &str = r#"
enterprise = "acme"

[[site]]
name = "dallas"

[[equipment]]
path = "acme/dallas/packaging/line-1/filler"

[equipment.tags.state]
type = "enum"
values = ["running", "idle", "faulted", "planned-stop"]

[equipment.tags.state_reason]
type = "string"

[equipment.tags.good_count]
type = "int"

[equipment.tags.reject_count]
type = "int"

[equipment.tags.energy]
type = "float"

[equipment.tags.product]
type = "string"
"#;

const CALENDAR: &str = r#"
[[kpi.calendar]]
name = "day"
time_zone = "America/Chicago"

[[kpi.calendar.shift]]
name = "day"
start = "06:00"
end = "14:00"
days = ["mon-fri"]
breaks = [{ start = "10:00", end = "10:30" }]
"#;

fn parse(kpi: &str) -> Result<Option<KpiConfig>, Vec<ModelError>> {
    let src = format!("{MODEL}\n{kpi}");
    let model = PlantModel::parse(&src, "site.toml").expect("model");
    config::parse(&src, "site.toml", &model, &[])
}

fn errors(kpi: &str) -> Vec<ModelError> {
    match parse(kpi) {
        Ok(_) => panic!("expected errors for:\n{kpi}"),
        Err(e) => e,
    }
}

/// The 1-based line of `needle` in the full source.
fn line_of(kpi: &str, needle: &str) -> usize {
    let src = format!("{MODEL}\n{kpi}");
    src.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle} not in source"))
}

#[test]
fn the_demo_plant_defines_six_work_units_on_three_shifts() {
    let model = PlantModel::demo();
    let cfg = config::parse(DEMO_PLANT_TOML, "demo-plant.toml", &model, &[])
        .unwrap_or_else(|e| panic!("{e:?}"))
        .expect("a [kpi] section");
    assert_eq!(cfg.units.len(), 6);
    assert_eq!(cfg.calendars.len(), 1);
    assert_eq!(cfg.calendars[0].shifts().len(), 3);
    assert_eq!(cfg.publish_every_ms, 10_000);
    let filler = cfg
        .unit("acme/dallas/packaging/line-1/filler")
        .expect("filler");
    assert_eq!(
        filler.counting,
        Counting::GoodAndScrap {
            good: "good_count".into(),
            scrap: "reject_count".into()
        }
    );
    assert!((filler.ideal_cycle_ms - 60_000.0 / 660.0).abs() < 1e-9);
    assert_eq!(filler.counter_modulus, Some(4_294_967_296.0));
    assert_eq!(cfg.units_under("acme/dallas/packaging/line-1").len(), 3);
    assert_eq!(cfg.units_under("acme/dallas").len(), 6);
    assert!(
        cfg.units_under("acme/dallas/packaging/line-1/fill")
            .is_empty()
    );
}

#[test]
fn a_minimal_unit_uses_defaults() {
    let cfg = parse(&format!(
        r#"{CALENDAR}
[[kpi.work_unit]]
path = "acme/dallas/packaging/line-1/filler"
produced = "good_count"
ideal_cycle_time = "0.5min"
"#
    ))
    .expect("valid")
    .expect("section");
    let u = &cfg.units[0];
    assert_eq!(u.state_tag, "state");
    assert_eq!(u.calendar, "day");
    assert_eq!(u.state_model.name, "gantry");
    assert_eq!(u.ideal_cycle_ms, 30_000.0);
    assert!(parse("").expect("no section").is_none());
}

#[test]
fn mistakes_are_reported_at_their_line_with_hints() {
    let kpi = format!(
        r#"{CALENDAR}
[[kpi.work_unit]]
path = "acme/dallas/packaging/line-1/filer"
good = "good_count"
scrap = "reject_count"
ideal_rate = "600/min"

[[kpi.work_unit]]
path = "acme/dallas/packaging/line-1/filler"
good = "good_cnt"
scrap = "reject_count"
ideal_cycle_time = "fast"
energy = "state"
state_model = "packmll"
calendar = "nite"
"#
    );
    let errs = errors(&kpi);
    let find = |field: &str| {
        errs.iter()
            .find(|e| e.field == field)
            .unwrap_or_else(|| panic!("no error for {field}: {errs:#?}"))
    };
    let e = find("kpi.work_unit[0].path");
    assert_eq!(e.line, line_of(&kpi, "line-1/filer\""));
    assert!(
        e.hint
            .as_deref()
            .is_some_and(|h| h.contains("line-1/filler")),
        "{e:?}"
    );
    let e = find("kpi.work_unit[1].good");
    assert!(
        e.hint.as_deref().is_some_and(|h| h.contains("good_count")),
        "{e:?}"
    );
    let e = find("kpi.work_unit[1].ideal_cycle_time");
    assert_eq!(e.line, line_of(&kpi, "\"fast\""));
    let e = find("kpi.work_unit[1].energy");
    assert!(e.message.contains("is enum"), "{e:?}");
    let e = find("kpi.work_unit[1].state_model");
    assert!(
        e.hint.as_deref().is_some_and(|h| h.contains("packml")),
        "{e:?}"
    );
    let e = find("kpi.work_unit[1].calendar");
    assert!(e.message.contains("unknown calendar \"nite\""), "{e:?}");
    assert!(errs.iter().all(|e| e.file == "site.toml" && e.line > 0));
}

#[test]
fn state_values_the_model_does_not_know_are_errors() {
    let kpi = format!(
        r#"{CALENDAR}
[[kpi.state_model]]
name = "partial"
[[kpi.state_model.state]]
name = "running"
bucket = "APT"
[[kpi.state_model.state]]
codes = "100-199"
bucket = "adot"
failure = true

[[kpi.work_unit]]
path = "acme/dallas/packaging/line-1/filler"
good = "good_count"
scrap = "reject_count"
ideal_rate = "600/min"
state_model = "partial"
"#
    );
    let errs = errors(&kpi);
    let unknown: Vec<&str> = errs
        .iter()
        .filter(|e| e.field == "kpi.work_unit[0].state")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(unknown.len(), 3, "{errs:#?}");
    assert!(
        unknown
            .iter()
            .any(|m| m.contains("\"planned-stop\"") && m.contains("UNKNOWN"))
    );
}

#[test]
fn custom_state_models_parse_and_bad_rules_are_located() {
    let kpi = format!(
        r#"{CALENDAR}
[[kpi.state_model]]
name = "plant"
[[kpi.state_model.state]]
name = "running"
bucket = "APT"
[[kpi.state_model.state]]
name = "idle"
bucket = "ADOT"
[[kpi.state_model.state]]
name = "faulted"
reason = "maintenance"
bucket = "PDOT"
[[kpi.state_model.state]]
name = "faulted"
bucket = "ADOT"
failure = true
[[kpi.state_model.state]]
name = "planned-stop"
bucket = "PDOT"

[[kpi.work_unit]]
path = "acme/dallas/packaging/line-1/filler"
good = "good_count"
scrap = "reject_count"
ideal_rate = "600/min"
state_model = "plant"
"#
    );
    let cfg = parse(&kpi).expect("valid").expect("section");
    let m = &cfg.units[0].state_model;
    assert_eq!(
        m.classify("faulted", Some("maintenance")).bucket,
        TimeBucket::Pdot
    );
    assert!(m.classify("faulted", None).failure);

    let bad = format!(
        r#"{CALENDAR}
[[kpi.state_model]]
name = "gantry"
[[kpi.state_model.state]]
name = "x"
bucket = "APT"

[[kpi.state_model]]
name = "other"
[[kpi.state_model.state]]
name = "x"
code = 3
bucket = "APT"
[[kpi.state_model.state]]
name = "y"
bucket = "RUNNING"
[[kpi.state_model.state]]
name = "z"
bucket = "PDOT"
failure = true
"#
    );
    let errs = errors(&bad);
    let msgs: Vec<String> = errs
        .iter()
        .map(|e| format!("{} {}", e.field, e.message))
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("kpi.state_model[0].name") && m.contains("already defined")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("kpi.state_model[1].state[0]") && m.contains("exactly one")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("kpi.state_model[1].state[1].bucket") && m.contains("RUNNING")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("kpi.state_model[1].state[2].failure")),
        "{msgs:#?}"
    );
}

#[test]
fn calendar_mistakes_are_reported() {
    let kpi = r#"
[[kpi.calendar]]
name = "a"
time_zone = "America/Chicgo"
[[kpi.calendar.shift]]
name = "day"
start = "6:00"
end = "14:00"

[[kpi.calendar]]
name = "b"
time_zone = "UTC"
[[kpi.calendar.shift]]
name = "day"
start = "06:00"
end = "14:00"
days = ["monday", "funday"]
"#;
    let errs = errors(kpi);
    let msgs: Vec<String> = errs
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("kpi.calendar[0].shift[0].start")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("kpi.calendar[1].shift[0].days") && m.contains("funday")),
        "{msgs:#?}"
    );
    // The zone is checked once the shifts parse.
    let errs = errors(
        r#"
[[kpi.calendar]]
name = "a"
time_zone = "America/Chicgo"
[[kpi.calendar.shift]]
name = "day"
start = "06:00"
end = "14:00"
"#,
    );
    assert!(
        errs.iter().any(|e| e.message.contains("America/Chicgo")
            && e.hint
                .as_deref()
                .is_some_and(|h| h.contains("America/Chicago"))),
        "{errs:#?}"
    );
}

#[test]
fn standards_carry_state_models() {
    let std_src = r#"
name = "acme"
version = "1"
[[kpi.state_model]]
name = "acme-states"
[[kpi.state_model.state]]
name = "running"
bucket = "APT"
[[kpi.state_model.state]]
name = "idle"
bucket = "ADOT"
[[kpi.state_model.state]]
name = "faulted"
bucket = "ADOT"
failure = true
[[kpi.state_model.state]]
name = "planned-stop"
bucket = "PDOT"
"#;
    let models = config::standard_state_models(std_src, "standard.toml").expect("valid");
    assert_eq!(models.len(), 1);
    let src = format!(
        r#"{MODEL}
[kpi]
default_state_model = "acme-states"
{CALENDAR}
[[kpi.work_unit]]
path = "acme/dallas/packaging/line-1/filler"
good = "good_count"
scrap = "reject_count"
ideal_rate = "600/min"
"#
    );
    let model = PlantModel::parse(&src, "site.toml").expect("model");
    let cfg = config::parse(&src, "site.toml", &model, &models)
        .expect("valid")
        .expect("section");
    assert_eq!(cfg.units[0].state_model.name, "acme-states");
}
