//! Tests for standard parsing, conformance of site models and compatibility.

use super::*;
use crate::plant::{DEMO_PLANT_TOML, PlantModel};

const STANDARD: &str = include_str!("../../../../examples/acme-standard.toml");
const STANDARD_V2: &str = include_str!("../../../../examples/acme-standard-v2.toml");

fn standard() -> Standard {
    match Standard::parse(STANDARD, "acme-standard.toml") {
        Ok(standard) => standard,
        Err(errors) => panic!("standard has errors:\n{errors}"),
    }
}

/// (line, column, field, message, hint) of every error.
fn summary(errors: &[ModelError]) -> Vec<(usize, usize, &str, &str, Option<&str>)> {
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

fn site(rest: &str) -> PlantModel {
    let src = format!("enterprise = \"acme\"\n[[site]]\nname = \"dallas\"\n{rest}");
    match PlantModel::parse(&src, "site.toml") {
        Ok(model) => model,
        Err(errors) => panic!("site has errors:\n{errors}"),
    }
}

#[test]
fn the_shipped_standard_parses() {
    let standard = standard();
    assert_eq!(standard.name, "acme-packaging");
    assert_eq!(standard.version, "1.0.0");
    let classes: Vec<String> = standard
        .classes
        .iter()
        .map(|c| c.class_ref().to_string())
        .collect();
    assert_eq!(
        classes,
        [
            "filler@1",
            "capper@1",
            "labeler@1",
            "filler@2",
            "energy-meter@1"
        ]
    );
    assert_eq!(standard.versions_of("filler"), [1, 2]);
    assert_eq!(standard.naming.max_segment_length, Some(32));
    assert_eq!(standard.naming.level_style, NameStyle::KebabCase);
    assert_eq!(standard.naming.tag_style, NameStyle::SnakeCase);
    let filler = standard
        .class(&ClassRef {
            name: "filler".into(),
            version: 1,
        })
        .unwrap();
    let speed = filler.tag("speed").unwrap();
    assert!(speed.required);
    assert_eq!(speed.spec.unit.as_deref(), Some("units/min"));
    assert_eq!((speed.spec.min, speed.spec.max), (Some(0.0), Some(1200.0)));
    assert!(!filler.tag("energy").unwrap().required);
    assert!(Standard::parse(STANDARD_V2, "v2.toml").is_ok());
}

#[test]
fn the_demo_plant_conforms() {
    let model = PlantModel::demo();
    let result = standard().check_site(&model);
    assert_eq!(result.errors, []);
    assert_eq!(result.instances.len(), 6);
    assert!(result.instances.iter().all(|i| i.conforming));
    assert_eq!(result.instances[0].site, "acme/dallas");
    assert_eq!(result.instances[0].class, "filler@1");
    let filler = &model.equipment()[0];
    assert_eq!(
        filler.class_ref,
        Some(ClassRef {
            name: "filler".into(),
            version: 1
        })
    );
    assert!(DEMO_PLANT_TOML.contains("class = \"filler@1\""));
}

#[test]
fn standard_errors_have_positions() {
    let src = "name = \"acme\"\nversion = \"1\"\n[naming]\nlevel_style = \"kebab\"\nmax_segment_length = 99\ntag_style = \"snake_case\"\n[naming.levels.lane]\npattern = \"x\"\n[[class]]\nname = \"filler\"\nversion = 1\n[class.tags.Speed]\ntype = \"float\"\n[class.tags.good-count]\ntype = \"int\"\nrequired = \"yes\"\n[[class]]\nname = \"filler\"\nversion = 1\n";
    let errors = match Standard::parse(src, "std.toml") {
        Ok(_) => panic!("expected errors"),
        Err(errors) => errors,
    };
    assert_eq!(
        summary(&errors),
        [
            (
                4,
                15,
                "naming.level_style",
                "unknown naming style \"kebab\"",
                Some("did you mean \"kebab-case\"?")
            ),
            (
                5,
                22,
                "naming.max_segment_length",
                "must be between 1 and 64",
                None
            ),
            (
                7,
                16,
                "naming.levels.lane",
                "unknown hierarchy level",
                Some("did you mean \"line\"?")
            ),
            (
                12,
                13,
                "class[0].tags.Speed",
                "segment \"Speed\" contains uppercase 'S' at character 1",
                Some("use \"speed\"")
            ),
            (
                14,
                13,
                "class[0].tags.good-count",
                "tag segment \"good-count\" is not snake_case: '-' at character 5",
                Some("use \"good_count\"")
            ),
            (
                16,
                12,
                "class[0].tags.good-count.required",
                "must be true or false, got string",
                None
            ),
            (
                18,
                8,
                "class[1].name",
                "class filler@1 is already defined on line 10",
                Some("give the new definition the next version number")
            ),
        ]
    );
}

#[test]
fn patterns() {
    assert!(matches_pattern("line-#", "line-1"));
    assert!(matches_pattern("line-#", "line-12"));
    assert!(!matches_pattern("line-#", "line-"));
    assert!(!matches_pattern("line-#", "line-1a"));
    assert!(matches_pattern("*-meter", "main-meter"));
    assert!(matches_pattern("*", ""));
    assert!(!matches_pattern("cell-#", "line-1"));
}

#[test]
fn class_refs() {
    assert_eq!(
        ClassRef::parse("filler@1")
            .map(|c| c.to_string())
            .as_deref(),
        Some("filler@1")
    );
    assert_eq!(
        ClassRef::parse("energy-meter@12"),
        Some(ClassRef {
            name: "energy-meter".into(),
            version: 12
        })
    );
    for bad in [
        "filler",
        "filler@",
        "filler@0",
        "filler@-1",
        "filler@1.0",
        "Filler@1",
        "@1",
        "filler@+1",
    ] {
        assert_eq!(ClassRef::parse(bad), None, "{bad}");
    }
    let src = "enterprise = \"acme\"\n[[site]]\nname = \"dallas\"\n[[equipment]]\npath = \"acme/dallas/filler\"\nclass = \"filler@v2\"\n";
    let errors = PlantModel::parse(src, "p.toml").unwrap_err();
    assert_eq!(
        summary(&errors),
        [(
            6,
            9,
            "equipment[0].class",
            "invalid class reference \"filler@v2\"",
            Some("write name@version with a positive version, e.g. \"filler@1\"")
        )]
    );
}

#[test]
fn extension_tags_are_resolved_into_equipment_tags() {
    let model = site(
        "[[equipment]]\npath = \"acme/dallas/utilities/line-1/meter\"\nclass = \"energy-meter@1\"\n[equipment.tags.power]\ntype = \"float\"\nunit = \"kW\"\nmin = 0.0\n[equipment.tags.energy]\ntype = \"float\"\nunit = \"kWh\"\nmin = 0.0\n[equipment.tags.voltage]\nextension = true\ntype = \"float\"\nunit = \"V\"\n",
    );
    let result = standard().check_site(&model);
    assert_eq!(result.errors, []);
    let meter = &model.equipment()[0];
    let tags: Vec<(&str, bool)> = meter
        .tags
        .iter()
        .map(|t| (t.path.as_str(), t.extension))
        .collect();
    assert_eq!(
        tags,
        [("power", false), ("energy", false), ("voltage", true)]
    );
    let (_, tag) = model
        .tag_for_topic("acme/dallas/utilities/line-1/meter/voltage")
        .unwrap();
    assert_eq!(tag.unit.as_deref(), Some("V"));
}

#[test]
fn contract_conflicts_are_errors() {
    let model = site(
        "[[equipment]]\npath = \"acme/dallas/utilities/line-1/meter\"\nclass = \"energy-meter@1\"\n[equipment.tags.power]\ntype = \"int\"\nunit = \"kW\"\n[equipment.tags.energy]\ntype = \"float\"\n[equipment.tags.power_factor]\ntype = \"float\"\nunit = \"pu\"\nmin = -1.0\nmax = 1.0\n",
    );
    let result = standard().check_site(&model);
    assert_eq!(
        summary(&result.errors),
        [
            (
                8,
                8,
                "equipment[0].tags.power.type",
                "type conflict: class energy-meter@1 declares \"power\" as float, not int",
                Some("use type = \"float\"")
            ),
            (
                10,
                17,
                "equipment[0].tags.energy.unit",
                "unit conflict: class energy-meter@1 declares \"energy\" in \"kWh\"; the tag has no unit",
                Some("add unit = \"kWh\"")
            ),
            (
                10,
                17,
                "equipment[0].tags.energy.min",
                "range wider than class energy-meter@1: \"energy\" has no min, the class's is 0",
                Some("add min = 0.0")
            ),
            (
                14,
                8,
                "equipment[0].tags.power_factor.unit",
                "unit conflict: class energy-meter@1 declares no unit for \"power_factor\"",
                Some("remove unit")
            ),
            (
                15,
                7,
                "equipment[0].tags.power_factor.min",
                "range wider than class energy-meter@1: min -1 is below the class's 0",
                Some("use min = 0.0 or narrower")
            ),
        ]
    );
    assert!(!result.instances[0].conforming);
}

#[test]
fn missing_class_is_an_error_with_the_class_list() {
    let model = site("[[equipment]]\npath = \"acme/dallas/packaging/line-1/filler\"\n");
    let result = standard().check_site(&model);
    assert_eq!(
        summary(&result.errors),
        [(
            5,
            9,
            "equipment[0].class",
            "equipment has no class; the standard requires every equipment to instantiate one",
            Some(
                "add class = \"<name>@<version>\", one of: filler@1, capper@1, labeler@1, filler@2, energy-meter@1"
            )
        )]
    );
    assert_eq!(result.instances[0].class, "-");
}

#[test]
fn compat_of_the_shipped_versions() {
    let old = standard();
    let new = Standard::parse(STANDARD_V2, "v2.toml").unwrap();
    let report = compat(&old, &new);
    assert_eq!(report.breaking, []);
    let lines: Vec<String> = report.non_breaking.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        lines,
        [
            "naming: max_segment_length changed from 32 to 48",
            "filler@1: tag state: enum value \"maintenance\" added",
            "filler@1: tag speed: range widened: max 1200 -> 1500",
            "filler@1: tag co2_pressure: optional tag added",
            "palletizer@1: class added",
        ]
    );
    // Backwards, every widening is a narrowing.
    let back = compat(&new, &old);
    let lines: Vec<String> = back.breaking.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        lines,
        [
            "naming: max_segment_length changed from 48 to 32",
            "filler@1: tag state: enum value \"maintenance\" removed",
            "filler@1: tag speed: range narrowed: max 1500 -> 1200",
            "filler@1: tag co2_pressure: tag removed",
            "palletizer@1: class version removed",
        ]
    );
}

#[test]
fn compat_rules_for_required_tags_and_naming() {
    let base = "name = \"s\"\nversion = \"1\"\n[naming]\ntag_style = \"snake_case\"\n[[class]]\nname = \"pump\"\nversion = 1\n[class.tags.flow]\ntype = \"float\"\nrequired = true\n";
    let old = Standard::parse(base, "old.toml").unwrap();
    let new_src = base
        .replace("tag_style = \"snake_case\"", "tag_style = \"any\"")
        .replace("required = true", "required = false")
        + "[class.tags.head]\ntype = \"float\"\nrequired = true\n[naming.levels.area]\nallowed = [\"pumps\"]\n";
    let new = Standard::parse(&new_src, "new.toml").unwrap();
    let report = compat(&old, &new);
    let breaking: Vec<String> = report.breaking.iter().map(|c| c.to_string()).collect();
    let non_breaking: Vec<String> = report.non_breaking.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        breaking,
        [
            "naming: allowed area names changed from [] to [pumps]",
            "pump@1: tag head: required tag added",
        ]
    );
    assert_eq!(
        non_breaking,
        [
            "naming: tag_style changed from snake_case to any",
            "pump@1: tag flow: required tag became optional",
        ]
    );
}

#[test]
fn report_matrix_and_cross_file_duplicates() {
    let standard = standard();
    let demo = PlantModel::demo();
    let again = PlantModel::parse(DEMO_PLANT_TOML, "copy.toml");
    let report = CheckReport::build(
        Some(&standard),
        vec![("demo.toml".into(), Ok(demo)), ("copy.toml".into(), again)],
    );
    assert_eq!(report.files[0].errors, []);
    assert_eq!(report.files[1].errors.len(), 6);
    assert_eq!(
        report.files[1].errors[0].to_string(),
        "copy.toml:16:9: equipment[0].path: duplicate equipment path \"acme/dallas/packaging/line-1/filler\", already declared in demo-plant.toml on line 16 (hint: each equipment belongs to exactly one site model)"
    );
    assert_eq!(
        report.matrix().to_string(),
        "site         filler@1  capper@1  labeler@1\nacme/dallas  2/4       2/4       2/4\n"
    );
    assert!(!report.is_ok());
}

#[test]
fn extension_must_be_a_boolean() {
    let src = "enterprise = \"acme\"\n[[site]]\nname = \"dallas\"\n[[equipment]]\npath = \"acme/dallas/filler\"\n[equipment.tags.x]\ntype = \"int\"\nextension = \"yes\"\n";
    let errors = PlantModel::parse(src, "p.toml").unwrap_err();
    assert_eq!(
        summary(&errors),
        [(
            8,
            13,
            "equipment[0].tags.x.extension",
            "must be true or false, got string",
            None
        )]
    );
}
