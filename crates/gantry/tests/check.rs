//! `gantry check` end to end: site models against the shipped enterprise
//! standard (one error per broken example, with file, line, field, message
//! and hint), the conformance matrix, JSON output, exit codes, and
//! `--compat` between the shipped standard versions.

use std::path::Path;
use std::process::Command;

const GANTRY: &str = env!("CARGO_BIN_EXE_gantry");
const STANDARD: &str = "examples/acme-standard.toml";

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `gantry check ARGS` from the workspace root, so file names in
/// messages are the relative paths given.
fn check(args: &[&str]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(GANTRY)
        .arg("check")
        .args(args)
        .current_dir(root)
        .output()
        .expect("gantry runs");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Checks one broken example against the standard; it must fail with
/// exactly these stderr lines and print nothing on stdout.
fn assert_broken(file: &str, expected: &[&str]) {
    let out = check(&["--standard", STANDARD, file]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.stdout, "");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines, expected);
}

#[test]
fn demo_plant_conforms_to_the_standard() {
    let out = check(&["--standard", STANDARD, "examples/demo-plant.toml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stderr, "");
    assert_eq!(
        out.stdout,
        "examples/demo-plant.toml: ok (6 equipment, 42 tags; 6/6 equipment conform to acme-packaging 1.0.0)\n"
    );
}

#[test]
fn check_without_a_standard_still_validates_one_file() {
    let out = check(&["examples/demo-plant.toml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "examples/demo-plant.toml: ok (6 equipment, 42 tags)\n"
    );
    // A file that breaks the standard is still a valid plant model.
    let out = check(&["examples/broken/unit-conflict.toml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn unknown_class() {
    assert_broken(
        "examples/broken/unknown-class.toml",
        &[
            "examples/broken/unknown-class.toml:9:9: equipment[0].class: unknown class \"filer@1\" (hint: did you mean \"filler@2\"?)",
            "examples/broken/unknown-class.toml:31:9: equipment[1].class: unknown class version \"capper@3\"; the standard defines capper@1 (hint: use \"capper@1\")",
            "examples/broken/unknown-class.toml:53:9: equipment[2].class: class \"labeler\" has no version (hint: use \"labeler@1\")",
            "examples/broken/unknown-class.toml: 3 error(s); 0/3 equipment conform to acme-packaging 1.0.0",
        ],
    );
}

#[test]
fn missing_required_tag() {
    assert_broken(
        "examples/broken/missing-required-tag.toml",
        &[
            "examples/broken/missing-required-tag.toml:8:9: equipment[0].tags: missing required tag \"good_count\" of class filler@1 (hint: add [equipment.tags.good_count] with type = \"int\", unit = \"count\")",
            "examples/broken/missing-required-tag.toml:8:9: equipment[0].tags: missing required tag \"speed\" of class filler@1 (hint: add [equipment.tags.speed] with type = \"float\", unit = \"units/min\", min = 0.0, max = 1200.0)",
            "examples/broken/missing-required-tag.toml: 2 error(s); 0/1 equipment conform to acme-packaging 1.0.0",
        ],
    );
}

#[test]
fn type_enum_and_range_conflicts() {
    assert_broken(
        "examples/broken/type-conflict.toml",
        &[
            "examples/broken/type-conflict.toml:13:10: equipment[0].tags.state.values: enum value \"paused\" is not in class filler@1 (hint: the class allows: running, idle, starved, blocked, faulted, changeover, planned-stop)",
            "examples/broken/type-conflict.toml:16:8: equipment[0].tags.good_count.type: type conflict: class filler@1 declares \"good_count\" as int, not float (hint: use type = \"int\")",
            "examples/broken/type-conflict.toml:27:7: equipment[0].tags.speed.max: range wider than class filler@1: max 1500 is above the class's 1200 (hint: use max = 1200.0 or narrower)",
            "examples/broken/type-conflict.toml: 3 error(s); 0/1 equipment conform to acme-packaging 1.0.0",
        ],
    );
}

#[test]
fn unit_conflict() {
    assert_broken(
        "examples/broken/unit-conflict.toml",
        &[
            "examples/broken/unit-conflict.toml:25:8: equipment[0].tags.speed.unit: unit conflict: class filler@1 declares \"speed\" in \"units/min\", not \"bpm\" (hint: use unit = \"units/min\")",
            "examples/broken/unit-conflict.toml:31:8: equipment[0].tags.temperature.unit: unit conflict: class filler@1 declares \"temperature\" in \"degC\", not \"degF\" (hint: use unit = \"degC\")",
            "examples/broken/unit-conflict.toml: 2 error(s); 0/1 equipment conform to acme-packaging 1.0.0",
        ],
    );
}

#[test]
fn naming_violations() {
    assert_broken(
        "examples/broken/naming-violation.toml",
        &[
            "examples/broken/naming-violation.toml:8:31: equipment[0].path: line \"line_1\" is not kebab-case: '_' at character 5 (hint: use \"line-1\")",
            "examples/broken/naming-violation.toml:30:21: equipment[1].path: area \"assembly\" is not in the standard's list of area names (hint: use one of: packaging, processing, utilities, warehouse)",
            "examples/broken/naming-violation.toml:51:17: equipment[1].tags.bottle-size: tag segment \"bottle-size\" is not snake_case: '-' at character 7 (hint: use \"bottle_size\")",
            "examples/broken/naming-violation.toml: 3 error(s); 0/2 equipment conform to acme-packaging 1.0.0",
        ],
    );
}

#[test]
fn duplicate_path() {
    assert_broken(
        "examples/broken/duplicate-path.toml",
        &[
            "examples/broken/duplicate-path.toml:30:8: equipment[1].path: duplicate equipment path \"acme/dallas/packaging/line-1/filler\", already used by equipment[0] on line 8 (hint: merge the two [[equipment]] entries)",
            "examples/broken/duplicate-path.toml: 1 error(s)",
        ],
    );
}

#[test]
fn bad_extensions() {
    assert_broken(
        "examples/broken/bad-extension.toml",
        &[
            "examples/broken/bad-extension.toml:24:13: equipment[0].tags.speed.extension: tag \"speed\" belongs to class filler@1 and cannot be an extension (hint: remove extension = true; a site may not redefine a class tag)",
            "examples/broken/bad-extension.toml:30:17: equipment[0].tags.line_pressure: tag \"line_pressure\" is not part of class filler@1 (hint: mark a site-specific tag with extension = true)",
            "examples/broken/bad-extension.toml:34:17: equipment[0].tags.spead: tag \"spead\" is not part of class filler@1 (hint: did you mean \"speed\"? A site-specific tag needs extension = true)",
            "examples/broken/bad-extension.toml: 3 error(s); 0/1 equipment conform to acme-packaging 1.0.0",
        ],
    );
}

#[test]
fn several_sites_print_the_conformance_matrix() {
    let out = check(&[
        "--standard",
        STANDARD,
        "examples/demo-plant.toml",
        "examples/sites/houston.toml",
    ]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stdout,
        "examples/demo-plant.toml: ok (6 equipment, 42 tags; 6/6 equipment conform to acme-packaging 1.0.0)\n\
         \n\
         conformance (conforming/total equipment per class):\n\
         site          filler@1  capper@1  labeler@1  filler@2  energy-meter@1\n\
         acme/dallas   2/2       2/2       2/2        -         -\n\
         acme/houston  -         0/1       -          1/1       1/1\n"
    );
    assert_eq!(
        out.stderr,
        "examples/sites/houston.toml:48:9: equipment[1].tags: missing required tag \"speed\" of class capper@1 (hint: add [equipment.tags.speed] with type = \"float\", unit = \"units/min\", min = 0.0, max = 1200.0)\n\
         examples/sites/houston.toml: 1 error(s); 2/3 equipment conform to acme-packaging 1.0.0\n"
    );
}

#[test]
fn json_output_for_ci() {
    let out = check(&[
        "--standard",
        STANDARD,
        "--format",
        "json",
        "examples/demo-plant.toml",
        "examples/sites/houston.toml",
    ]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr, "");
    let expected = concat!(
        r#"{"errors":[{"column":9,"field":"equipment[1].tags","file":"examples/sites/houston.toml","#,
        r#""hint":"add [equipment.tags.speed] with type = \"float\", unit = \"units/min\", min = 0.0, max = 1200.0","#,
        r#""line":48,"message":"missing required tag \"speed\" of class capper@1"}],"#,
        r#""matrix":{"classes":["filler@1","capper@1","labeler@1","filler@2","energy-meter@1"],"#,
        r#""rows":[{"classes":{"capper@1":{"conforming":2,"total":2},"filler@1":{"conforming":2,"total":2},"labeler@1":{"conforming":2,"total":2}},"site":"acme/dallas"},"#,
        r#"{"classes":{"capper@1":{"conforming":0,"total":1},"energy-meter@1":{"conforming":1,"total":1},"filler@2":{"conforming":1,"total":1}},"site":"acme/houston"}]},"#,
        r#""ok":false,"#,
        r#""sites":[{"conforming":6,"equipment":6,"errors":0,"file":"examples/demo-plant.toml","instances":6,"ok":true,"tags":42},"#,
        r#"{"conforming":2,"equipment":3,"errors":1,"file":"examples/sites/houston.toml","instances":3,"ok":false,"tags":11}],"#,
        r#""standard":{"file":"examples/acme-standard.toml","name":"acme-packaging","version":"1.0.0"}}"#,
        "\n"
    );
    assert_eq!(out.stdout, expected);

    let ok = check(&[
        "--format",
        "json",
        "--standard",
        STANDARD,
        "examples/demo-plant.toml",
    ]);
    assert_eq!(ok.code, 0);
    assert!(ok.stdout.starts_with(r#"{"errors":[],"#), "{}", ok.stdout);
    assert!(ok.stdout.contains(r#""ok":true"#), "{}", ok.stdout);
}

#[test]
fn the_same_equipment_in_two_files_is_a_duplicate() {
    let out = check(&[
        "--standard",
        STANDARD,
        "examples/demo-plant.toml",
        "examples/broken/unit-conflict.toml",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("examples/broken/unit-conflict.toml:8:9: equipment[0].path: duplicate equipment path \"acme/dallas/packaging/line-1/filler\", already declared in examples/demo-plant.toml on line 16 (hint: each equipment belongs to exactly one site model)\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_invalid_standard_is_reported_in_the_standard_file() {
    let out = check(&[
        "--standard",
        "examples/demo-plant.toml",
        "examples/demo-plant.toml",
    ]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "examples/demo-plant.toml:1:1: name: missing required field (hint: e.g. name = \"acme-packaging\")",
            "examples/demo-plant.toml:1:1: version: missing required field (hint: e.g. version = \"1.0.0\")",
            "examples/demo-plant.toml:8:1: enterprise: unknown field (hint: expected one of: name, version, description, naming, class, kpi)",
            "examples/demo-plant.toml:11:3: site: unknown field (hint: expected one of: name, version, description, naming, class, kpi)",
            "examples/demo-plant.toml:15:3: equipment: unknown field (hint: expected one of: name, version, description, naming, class, kpi)",
            "examples/demo-plant.toml:279:3: modbus: unknown field (hint: expected one of: name, version, description, naming, class, kpi)",
            "examples/demo-plant.toml: 6 error(s) in the standard",
        ]
    );
}

#[test]
fn compat_of_a_compatible_revision() {
    let out = check(&["--compat", STANDARD, "examples/acme-standard-v2.toml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "acme-packaging 1.0.0 -> acme-packaging 2.0.0: 0 breaking, 5 non-breaking change(s)\n\
         non-breaking: naming: max_segment_length changed from 32 to 48\n\
         non-breaking: filler@1: tag state: enum value \"maintenance\" added\n\
         non-breaking: filler@1: tag speed: range widened: max 1200 -> 1500\n\
         non-breaking: filler@1: tag co2_pressure: optional tag added\n\
         non-breaking: palletizer@1: class added\n"
    );
}

#[test]
fn compat_reports_breaking_changes_and_fails() {
    let out = check(&[
        "--compat",
        STANDARD,
        "examples/broken/acme-standard-breaking.toml",
    ]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stdout,
        "acme-packaging 1.0.0 -> acme-packaging 3.0.0: 7 breaking, 1 non-breaking change(s)\n\
         breaking: filler@1: tag state: enum value \"planned-stop\" removed\n\
         breaking: filler@1: tag good_count: type changed from int to float\n\
         breaking: filler@1: tag reject_count: tag removed\n\
         breaking: filler@1: tag speed: range narrowed: max 1200 -> 1000\n\
         breaking: filler@1: tag temperature: unit changed from \"degC\" to \"degF\"\n\
         breaking: filler@1: tag energy: optional tag became required\n\
         breaking: labeler@1: class version removed\n\
         non-breaking: filler@1: tag temperature: range widened: max 150 -> 300\n"
    );
    let json = check(&[
        "--compat",
        STANDARD,
        "examples/broken/acme-standard-breaking.toml",
        "--format",
        "json",
    ]);
    assert_eq!(json.code, 1);
    assert!(
        json.stdout.starts_with(
            r#"{"breaking":[{"message":"enum value \"planned-stop\" removed","subject":"filler@1","tag":"state"},"#
        ),
        "{}",
        json.stdout
    );
    assert!(
        json.stdout.ends_with(
            "\"non_breaking\":[{\"message\":\"range widened: max 150 -> 300\",\"subject\":\"filler@1\",\"tag\":\"temperature\"}]}\n"
        ),
        "{}",
        json.stdout
    );
}

#[test]
fn usage_errors_exit_with_status_2() {
    assert_eq!(check(&[]).code, 2);
    assert_eq!(check(&["--compat", STANDARD]).code, 2);
    assert_eq!(
        check(&["--compat", STANDARD, STANDARD, "examples/demo-plant.toml"]).code,
        2
    );
}

#[test]
fn a_tag_read_by_two_protocols_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site.toml");
    std::fs::write(
        &site,
        r#"enterprise = "acme"
[[site]]
name = "dallas"
[[equipment]]
path = "acme/dallas/mixing/line-1/mixer"
[equipment.tags.speed]
type = "float"

[[modbus]]
name = "mixer-plc"
host = "127.0.0.1"
equipment = "acme/dallas/mixing/line-1/mixer"
[[modbus.point]]
tag = "speed"
table = "holding"
address = 0
type = "float32"

[[opcua]]
name = "mixer-server"
endpoint = "opc.tcp://127.0.0.1:4840"
equipment = "acme/dallas/mixing/line-1/mixer"
[[opcua.node]]
tag = "speed"
node_id = "ns=2;s=Mixer.Speed"
"#,
    )
    .unwrap();
    let out = check(&[site.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let expected = format!(
        "{}:11:9: modbus[0]: tag \"acme/dallas/mixing/line-1/mixer/speed\" is read from Modbus device \"mixer-plc\" and from OPC UA server \"mixer-server\" (node ns=2;s=Mixer.Speed) (hint: a tag has one source: map it in one of them)",
        site.display()
    );
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
}
