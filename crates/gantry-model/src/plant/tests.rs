//! Tests for plant model validation, error positions and lookups.

use super::*;

fn errors(src: &str) -> ModelErrors {
    match PlantModel::parse(src, "plant.toml") {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(errors) => errors,
    }
}

/// (line, column, field, message, hint) of every error.
fn summary(errors: &ModelErrors) -> Vec<(usize, usize, &str, &str, Option<&str>)> {
    errors
        .iter()
        .map(|e| {
            (
                e.line,
                e.column,
                e.field.as_str(),
                e.message.as_str(),
                e.hint.as_deref(),
            )
        })
        .collect()
}

const HEADER: &str = "enterprise = \"acme\"\n[[site]]\nname = \"dallas\"\n";

fn with_header(rest: &str) -> String {
    format!("{HEADER}{rest}")
}

#[test]
fn demo_plant_parses_cleanly() {
    let model = match PlantModel::parse(DEMO_PLANT_TOML, "demo-plant.toml") {
        Ok(model) => model,
        Err(errors) => panic!("demo plant has errors:\n{errors}"),
    };
    assert_eq!(model.enterprise().as_str(), "acme");
    assert_eq!(model.sites().len(), 1);
    assert_eq!(model.sites()[0].name.as_str(), "dallas");
    assert_eq!(model.equipment().len(), 6);
    assert_eq!(model.tag_count(), 42);
    let paths: Vec<&str> = model.equipment().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "acme/dallas/packaging/line-1/filler",
            "acme/dallas/packaging/line-1/capper",
            "acme/dallas/packaging/line-1/labeler",
            "acme/dallas/packaging/line-2/filler",
            "acme/dallas/packaging/line-2/capper",
            "acme/dallas/packaging/line-2/labeler",
        ]
    );
    for equipment in model.equipment() {
        let tags: Vec<&str> = equipment.tags.iter().map(|t| t.path.as_str()).collect();
        assert_eq!(
            tags,
            [
                "state",
                "state_reason",
                "good_count",
                "reject_count",
                "speed",
                "temperature",
                "energy"
            ]
        );
    }
    let (equipment, state) = model
        .tag_for_topic("acme/dallas/packaging/line-2/capper/state")
        .unwrap();
    assert_eq!(
        equipment.path.as_str(),
        "acme/dallas/packaging/line-2/capper"
    );
    assert_eq!(
        state.tag_type.enum_values(),
        [
            "running",
            "idle",
            "starved",
            "blocked",
            "faulted",
            "changeover",
            "planned-stop"
        ]
    );
    let (_, speed) = model
        .tag_for_topic("acme/dallas/packaging/line-1/filler/speed")
        .unwrap();
    assert_eq!(speed.tag_type, TagType::Float);
    assert_eq!(speed.unit.as_deref(), Some("units/min"));
    assert_eq!((speed.min, speed.max), (Some(0.0), Some(1200.0)));
    let (_, temperature) = model
        .tag_for_topic("acme/dallas/packaging/line-1/filler/temperature")
        .unwrap();
    assert_eq!(temperature.unit.as_deref(), Some("degC"));
    assert_eq!(temperature.max, Some(150.0));
    let (_, good) = model
        .tag_for_topic("acme/dallas/packaging/line-1/labeler/good_count")
        .unwrap();
    assert_eq!(good.tag_type, TagType::Int);
    assert_eq!(good.unit.as_deref(), Some("count"));
    let (_, reason) = model
        .tag_for_topic("acme/dallas/packaging/line-1/labeler/state_reason")
        .unwrap();
    assert_eq!(reason.tag_type, TagType::String);
    let (_, energy) = model
        .tag_for_topic("acme/dallas/packaging/line-1/labeler/energy")
        .unwrap();
    assert_eq!(energy.unit.as_deref(), Some("kWh"));
    assert_eq!(PlantModel::demo().tag_count(), 42);
}

#[test]
fn multi_error_file_reports_every_error_with_position() {
    let src = r#"# broken plant
enterprise = "acme"
descripton = "typo"

[[site]]
name = "dallas"

[[equipment]]
path = "acme/dallas/packaging/Line 1/filler"
class = ""

[equipment.tags.temperature]
type = "float"
unit = ""
min = 150.0
max = -20.0

[equipment.tags.state]
type = "enum"

[equipment.tags.ok]
type = "bool"
values = ["a"]
min = 1

[[equipment]]
path = "acne/houston/filler"
tags.Speed = { type = "double" }

[[equipment]]
path = "acme/dallas/packaging/line-2/capper"
tags.count = { type = "int", vlaues = [1] }

[[equipment]]
path = "acme/dallas/packaging/line-2/capper"
tags.count = { type = "int" }

[[equipment]]
path = 5
tags = "x"
"#;
    let errors = errors(src);
    let expected: Vec<(usize, usize, &str, &str, Option<&str>)> = vec![
        (
            3,
            1,
            "descripton",
            "unknown field",
            Some("did you mean \"description\"?"),
        ),
        (
            9,
            31,
            "equipment[0].path",
            "segment \"Line 1\" contains a space at character 5",
            Some("use \"line-1\""),
        ),
        (
            10,
            9,
            "equipment[0].class",
            "must not be empty",
            Some("remove the field or name the class, e.g. \"filler\""),
        ),
        (
            14,
            8,
            "equipment[0].tags.temperature.unit",
            "must not be empty",
            Some("remove unit, or give one such as \"degC\""),
        ),
        (
            16,
            7,
            "equipment[0].tags.temperature.max",
            "min (150) is greater than max (-20)",
            Some("swap min and max"),
        ),
        (
            18,
            1,
            "equipment[0].tags.state.values",
            "missing required field",
            Some("enum tags list their values, e.g. values = [\"running\", \"idle\"]"),
        ),
        (
            23,
            10,
            "equipment[0].tags.ok.values",
            "only enum tags take values; this tag is \"bool\"",
            Some("remove values, or set type = \"enum\""),
        ),
        (
            24,
            7,
            "equipment[0].tags.ok.min",
            "only float and int tags take min; this tag is \"bool\"",
            None,
        ),
        (
            27,
            9,
            "equipment[1].path",
            "path must start with the enterprise \"acme\", not \"acne\"",
            Some("use \"acme/houston/filler\""),
        ),
        (
            27,
            14,
            "equipment[1].path",
            "site \"houston\" is not declared",
            Some("add a [[site]] with name = \"houston\""),
        ),
        (
            28,
            6,
            "equipment[1].tags.Speed",
            "segment \"Speed\" contains uppercase 'S' at character 1",
            Some("use \"speed\""),
        ),
        (
            28,
            23,
            "equipment[1].tags.Speed.type",
            "unknown tag type \"double\"",
            Some("did you mean \"float\"?"),
        ),
        (
            32,
            30,
            "equipment[2].tags.count.vlaues",
            "unknown field",
            Some("did you mean \"values\"?"),
        ),
        (
            35,
            8,
            "equipment[3].path",
            "duplicate equipment path \"acme/dallas/packaging/line-2/capper\", already used by equipment[2] on line 31",
            Some("merge the two [[equipment]] entries"),
        ),
        (
            39,
            8,
            "equipment[4].path",
            "must be a string, got integer",
            None,
        ),
        (
            40,
            8,
            "equipment[4].tags",
            "must be a table of tags, got string",
            Some("declare each tag as [equipment.tags.<name>]"),
        ),
    ];
    assert_eq!(summary(&errors), expected, "\n{errors}");
    let text = errors.to_string();
    assert_eq!(text.lines().count(), expected.len());
    assert_eq!(
        text.lines().nth(1),
        Some(
            "plant.toml:9:31: equipment[0].path: segment \"Line 1\" contains a space at character 5 (hint: use \"line-1\")"
        )
    );
}

#[test]
fn syntax_errors_are_all_reported() {
    let src = "enterprise = \"acme\"\nbad = = 3\nname = dallas\n";
    let errors = errors(src);
    let s = summary(&errors);
    assert_eq!(s.len(), 2, "{errors}");
    assert_eq!((s[0].0, s[0].1, s[0].2), (2, 7, ""));
    assert!(s[0].3.contains('='), "{}", s[0].3);
    assert_eq!((s[1].0, s[1].1), (3, 8));
    assert!(s[1].3.contains("quoted"), "{}", s[1].3);
}

#[test]
fn duplicate_tag_table_is_reported_once() {
    let src = with_header(
        "[[equipment]]
path = \"acme/dallas/filler\"
[equipment.tags.state]
type = \"enum\"
values = [\"a\"]
[equipment.tags.state] # again
type = \"int\"
",
    );
    let errors = errors(&src);
    assert_eq!(
        summary(&errors),
        vec![(
            9,
            17,
            "",
            "table [equipment.tags.state] is declared twice",
            Some("a tag can be declared only once per equipment")
        )],
        "{errors}"
    );
    let errors = self::errors("enterprise = \"acme\"\nenterprise = \"acme\"\n");
    assert_eq!(errors[0].message, "duplicate key \"enterprise\"");
    assert_eq!((errors[0].line, errors[0].column), (2, 1));
}

#[test]
fn enterprise_rules() {
    let errors = errors("description = \"x\"\n");
    assert_eq!(
        summary(&errors),
        vec![(
            1,
            1,
            "enterprise",
            "missing required field",
            Some("add enterprise = \"<name>\" at the top of the file")
        )]
    );
    let errors = self::errors("enterprise = \"ACME\"\n");
    assert_eq!(errors[0].field, "enterprise");
    assert_eq!((errors[0].line, errors[0].column), (1, 15));
    assert_eq!(errors[0].hint.as_deref(), Some("use \"acme\""));
    let errors = self::errors("enterprise = 1\n");
    assert_eq!(errors[0].message, "must be a string, got integer");
}

#[test]
fn minimal_models_are_valid() {
    let model = PlantModel::parse("enterprise = \"acme\"\n", "p.toml").unwrap();
    assert!(model.equipment().is_empty());
    assert_eq!(model.description(), None);
    assert_eq!(model.all_tag_topics().count(), 0);
    let model = PlantModel::parse(
        &with_header("[[equipment]]\npath = \"acme/dallas\"\n"),
        "p.toml",
    )
    .unwrap();
    assert_eq!(model.equipment()[0].path.depth(), 2);
    assert!(model.equipment()[0].tags.is_empty());
}

#[test]
fn equipment_depth_limits() {
    let errors = errors(&with_header("[[equipment]]\npath = \"acme\"\n"));
    assert_eq!(
        errors[0].message,
        "path has 1 level; equipment needs 2 to 6 (enterprise/site/area/line/cell/equipment)"
    );
    let errors = self::errors(&with_header(
        "[[equipment]]\npath = \"acme/dallas/a/b/c/d/e\"\n",
    ));
    assert!(errors[0].message.starts_with("path has 7 levels"));
    let errors = self::errors(&with_header("[[equipment]]\npath = \"acme/dallas//x\"\n"));
    assert_eq!(errors[0].message, "level 3 is empty");
    assert_eq!(errors[0].column, 21);
    let errors = self::errors(&with_header("[[equipment]]\ndescription = \"x\"\n"));
    assert_eq!(errors[0].field, "equipment[0].path");
    assert_eq!(errors[0].message, "missing required field");
    assert_eq!((errors[0].line, errors[0].column), (4, 1));
}

#[test]
fn every_bad_segment_of_a_path_is_reported() {
    let errors = errors(&with_header(
        "[[equipment]]\npath = \"acme/dallas/Packaging/line 1\"\n",
    ));
    let columns: Vec<_> = errors.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(columns, [(5, 21), (5, 31)], "{errors}");
}

#[test]
fn sites_must_be_declared_once() {
    let src = "enterprise = \"acme\"
[[site]]
name = \"dallas\"
[[site]]
name = \"dallas\"
[[equipment]]
path = \"acme/dalas/filler\"
";
    let errors = errors(src);
    assert_eq!(
        summary(&errors),
        vec![
            (
                5,
                8,
                "site[1].name",
                "site \"dallas\" is already declared on line 3",
                None
            ),
            (
                7,
                14,
                "equipment[0].path",
                "site \"dalas\" is not declared",
                Some("did you mean \"dallas\"?")
            ),
        ]
    );
}

#[test]
fn invalid_site_name_does_not_cascade() {
    let src = "enterprise = \"acme\"
[[site]]
name = \"Dallas\"
[[equipment]]
path = \"acme/dallas/filler\"
";
    let errors = errors(src);
    assert_eq!(errors.len(), 1, "{errors}");
    assert_eq!(errors[0].field, "site[0].name");
    assert_eq!(errors[0].hint.as_deref(), Some("use \"dallas\""));
}

#[test]
fn site_and_equipment_shapes() {
    let errors = errors("enterprise = \"acme\"\nsite = \"dallas\"\nequipment = [1]\n");
    assert_eq!(
        summary(&errors),
        vec![
            (
                2,
                8,
                "site",
                "must be an array of tables ([[site]]), got string",
                None
            ),
            (3, 14, "equipment[0]", "must be a table, got integer", None),
        ]
    );
    let errors = self::errors("enterprise = \"acme\"\n[[site]]\nname = \"d\"\ncolor = 1\n");
    assert_eq!(errors[0].field, "site[0].color");
    assert_eq!(
        errors[0].hint.as_deref(),
        Some("expected one of: name, description")
    );
}

#[test]
fn tag_rules() {
    let src = with_header(
        r#"[[equipment]]
path = "acme/dallas/filler"
tags.a = { type = "enum", values = [] }
tags.b = { type = "enum", values = ["x", "x", "", 3] }
tags.c = { type = "bool", unit = "degC" }
tags.d = "float"
tags.e = { unit = "kWh" }
tags.f = { type = "float", min = "low", max = nan }
tags.g = { type = "enum", values = "x" }
"#,
    );
    let errors = errors(&src);
    let got: Vec<(usize, &str, &str)> = errors
        .iter()
        .map(|e| (e.line, e.field.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (6, "equipment[0].tags.a.values", "enum tag has no values"),
            (
                7,
                "equipment[0].tags.b.values[1]",
                "duplicate enum value \"x\""
            ),
            (
                7,
                "equipment[0].tags.b.values[2]",
                "enum value must not be empty"
            ),
            (
                7,
                "equipment[0].tags.b.values[3]",
                "must be a string, got integer"
            ),
            (
                8,
                "equipment[0].tags.c.unit",
                "only float and int tags take a unit; this tag is \"bool\""
            ),
            (
                9,
                "equipment[0].tags.d",
                "a tag must be a table with a \"type\" field, got string"
            ),
            (10, "equipment[0].tags.e.type", "missing required field"),
            (
                11,
                "equipment[0].tags.f.min",
                "must be a number, got string"
            ),
            (11, "equipment[0].tags.f.max", "must be a finite number"),
            (
                12,
                "equipment[0].tags.g.values",
                "must be an array of strings, got string"
            ),
        ],
        "\n{errors}"
    );
}

#[test]
fn tag_groups_and_quoted_keys() {
    let src = with_header(
        r#"[[equipment]]
path = "acme/dallas/filler"
[equipment.tags."motor/current"]
type = "float"
unit = "A"
[equipment.tags."motor/Speed"]
type = "float"
[equipment.tags."a/b/c/d/e/f/g/h/i"]
type = "int"
"#,
    );
    let errors = errors(&src);
    assert_eq!(
        summary(&errors),
        vec![
            (
                9,
                24,
                "equipment[0].tags.\"motor/Speed\"",
                "segment \"Speed\" contains uppercase 'S' at character 1",
                Some("use \"speed\"")
            ),
            (
                11,
                17,
                "equipment[0].tags.\"a/b/c/d/e/f/g/h/i\"",
                "tag path has 9 levels; the maximum is 8",
                None
            ),
        ]
    );
}

#[test]
fn tag_topics_must_be_unique_across_equipment() {
    let src = with_header(
        r#"[[equipment]]
path = "acme/dallas/filler"
tags."motor/current" = { type = "float" }
[[equipment]]
path = "acme/dallas/filler/motor"
tags.current = { type = "float" }
"#,
    );
    let errors = errors(&src);
    assert_eq!(
        summary(&errors),
        vec![(
            9,
            6,
            "equipment[1].tags.current",
            "duplicate tag: topic \"acme/dallas/filler/motor/current\" is already declared by equipment[0].tags.\"motor/current\" on line 6",
            None
        )]
    );
}

#[test]
fn unknown_type_hints() {
    for (kind, hint) in [
        ("integer", "did you mean \"int\"?"),
        ("Float", "did you mean \"float\"?"),
        ("boolean", "did you mean \"bool\"?"),
        ("strng", "did you mean \"string\"?"),
        ("xyz", "one of float, int, bool, string, enum"),
    ] {
        let src = with_header(&format!(
            "[[equipment]]\npath = \"acme/dallas/x\"\ntags.t = {{ type = \"{kind}\" }}\n"
        ));
        let errors = errors(&src);
        assert_eq!(errors[0].message, format!("unknown tag type \"{kind}\""));
        assert_eq!(errors[0].hint.as_deref(), Some(hint), "{kind}");
    }
}

#[test]
fn lookups() {
    let src = with_header(
        r#"[[equipment]]
path = "acme/dallas/filler"
class = "filler"
description = "Filler"
tags."motor/current" = { type = "float", unit = "A", min = 0, max = 32 }
tags.state = { type = "enum", values = ["on", "off"] }
[[equipment]]
path = "acme/dallas/filler/motor"
tags.speed = { type = "int" }
"#,
    );
    let model = PlantModel::parse(&src, "p.toml").unwrap();
    let (equipment, tag) = model
        .tag_for_topic("acme/dallas/filler/motor/current")
        .unwrap();
    assert_eq!(equipment.path.as_str(), "acme/dallas/filler");
    assert_eq!(tag.path.as_str(), "motor/current");
    assert_eq!((tag.min, tag.max), (Some(0.0), Some(32.0)));
    let (equipment, tag) = model
        .tag_for_topic("acme/dallas/filler/motor/speed")
        .unwrap();
    assert_eq!(equipment.path.as_str(), "acme/dallas/filler/motor");
    assert_eq!(tag.tag_type, TagType::Int);
    assert!(model.tag_for_topic("acme/dallas/filler/motor").is_none());
    assert!(model.tag_for_topic("acme/dallas/filler/pressure").is_none());
    assert!(model.tag_for_topic("").is_none());
    let topics: Vec<String> = model.all_tag_topics().map(|p| p.to_topic()).collect();
    assert_eq!(
        topics,
        [
            "acme/dallas/filler/motor/current",
            "acme/dallas/filler/state",
            "acme/dallas/filler/motor/speed",
        ]
    );
    let filler = model.equipment_at("acme/dallas/filler").unwrap();
    assert_eq!(filler.class.as_deref(), Some("filler"));
    assert_eq!(filler.description.as_deref(), Some("Filler"));
    assert!(filler.tag("state").is_some());
    assert!(filler.tag("motor").is_none());
    assert!(model.equipment_at("acme/dallas").is_none());
}

#[test]
fn load_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plant.toml");
    std::fs::write(
        &path,
        with_header("[[equipment]]\npath = \"acme/dallas/x\"\n"),
    )
    .unwrap();
    let model = PlantModel::load(&path).unwrap();
    assert_eq!(model.equipment().len(), 1);

    std::fs::write(&path, "enterprise = \"Acme\"\n").unwrap();
    let errors = PlantModel::load(&path).unwrap_err();
    assert_eq!(errors[0].file, path.display().to_string());
    assert!(
        errors
            .to_string()
            .starts_with(&format!("{}:1:15: enterprise:", path.display()))
    );

    let missing = dir.path().join("nope.toml");
    let errors = PlantModel::load(&missing).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 0);
    assert!(
        errors[0]
            .to_string()
            .starts_with(&format!("{}: cannot read plant model:", missing.display()))
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_never_panics(src in any::<String>()) {
            let _ = PlantModel::parse(&src, "fuzz.toml");
        }

        #[test]
        fn parse_never_panics_on_model_like_text(
            src in "(enterprise|path|name|tags|type|values|min|max|unit|\\[\\[equipment\\]\\]|\\[equipment\\.tags\\.x\\]|\\[\\[site\\]\\]| |=|\"|/|a|A|1|\\.|\n){0,80}"
        ) {
            if let Err(errors) = PlantModel::parse(&src, "fuzz.toml") {
                prop_assert!(!errors.is_empty());
                for error in errors.iter() {
                    prop_assert!(error.line >= 1 && error.column >= 1, "{}", error);
                }
            }
        }
    }
}

#[test]
fn deeply_nested_input_is_an_error_not_a_crash() {
    let src = format!("enterprise = \"acme\"\nx = {}", "[".repeat(100_000));
    assert!(PlantModel::parse(&src, "deep.toml").is_err());
    let src = format!("enterprise = \"acme\"\nx = {}", "{a=".repeat(50_000));
    assert!(PlantModel::parse(&src, "deep.toml").is_err());
}

#[test]
fn write_allow_list_is_per_tag_and_off_by_default() {
    let src = with_header(
        r#"[[equipment]]
path = "acme/dallas/packaging/line-1/filler"
[equipment.tags.speed]
type = "float"
[equipment.tags.setpoint]
type = "float"
min = 0.0
max = 1200.0
write = { max_per_minute = 6, approval = "two-person" }
[equipment.tags.reset]
type = "bool"
write = true
"#,
    );
    let model = PlantModel::parse(&src, "plant.toml").unwrap();
    let tag = |name: &str| {
        model
            .tag_for_topic(&format!("acme/dallas/packaging/line-1/filler/{name}"))
            .unwrap()
            .1
            .write
            .clone()
    };
    assert_eq!(tag("speed"), None);
    assert_eq!(
        tag("setpoint"),
        Some(WritePolicy {
            max_per_minute: Some(6),
            two_person: true
        })
    );
    assert_eq!(tag("reset"), Some(WritePolicy::default()));
}

#[test]
fn bad_write_policies_are_reported_with_their_position() {
    let src = with_header(
        r#"[[equipment]]
path = "acme/dallas/packaging/line-1/filler"
[equipment.tags.setpoint]
type = "float"
write = { max_per_minute = 0, approval = "boss", when = "always" }
[equipment.tags.reset]
type = "bool"
write = "yes"
"#,
    );
    let errors = errors(&src);
    let got = summary(&errors);
    let fields: Vec<&str> = got.iter().map(|e| e.2).collect();
    assert!(
        fields.contains(&"equipment[0].tags.setpoint.write.max_per_minute"),
        "{got:?}"
    );
    assert!(
        fields.contains(&"equipment[0].tags.setpoint.write.approval"),
        "{got:?}"
    );
    assert!(
        fields.contains(&"equipment[0].tags.setpoint.write.when"),
        "{got:?}"
    );
    assert!(fields.contains(&"equipment[0].tags.reset.write"), "{got:?}");
    assert!(got.iter().all(|e| e.0 == 8 || e.0 == 11), "{got:?}");
}
