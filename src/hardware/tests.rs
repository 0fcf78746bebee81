use super::cpu::CpuInfo;
use super::files::read_capped;
use super::jetson::{igpu_dir, parse_l4t, parse_load, tegra_soc};
use super::memory::MemInfo;
use super::nvidia_smi::smi_number;
use super::power_mode::{nvpmodel_default, nvpmodel_name, parse_pmode};
use super::thermal::{parse_millidegrees, zone_key};
use super::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn no_commands(program: &str, _: &[&str]) -> Option<String> {
    panic!("{program} must not run for this tree")
}

#[test]
fn smi_numbers_are_integers_or_plain_decimals() {
    assert_eq!(smi_number("45").map(Value::from), Some(json!(45)));
    assert_eq!(smi_number("12.5").map(Value::from), Some(json!(12.5)));
    assert_eq!(smi_number("-3.25").map(Value::from), Some(json!(-3.25)));
    assert_eq!(smi_number("0.05").map(Value::from), Some(json!(0.05)));
    for bad in [
        "[N/A]",
        "[Not Supported]",
        "",
        ".5",
        "5.",
        "1e3",
        "1.2.3",
        "nan",
        "-.5",
    ] {
        assert_eq!(smi_number(bad), None, "{bad:?}");
    }
}

#[test]
fn jetson_nano_r32() {
    let got = describe_with(&fixture("jetson-nano-r32.7.1"), &no_commands);
    assert_eq!(
        got,
        json!({
            "cpu": {"model": "ARM Cortex-A57", "cores": 4},
            "memory": {"total_mb": 3964, "available_mb": 3634},
            "jetson": {
                "model": "NVIDIA Jetson Nano Developer Kit",
                "soc": "tegra210",
                "l4t": "R32.7.1",
                "unified_memory": true,
                "nvmap_used_mb": 786,
                "gpu_load_pct": 0.0,
                // PMIC-Die (a fake 100 °C) is left out.
                "temperatures_c": {
                    "ao": 27.0, "cpu": 23.0, "gpu": 22.5, "pll": 20.5,
                    "thermal-fan-est": 22.5
                }
            }
        })
    );
}

#[test]
fn jetson_orin_nano_super_r36() {
    let got = describe_with(&fixture("jetson-orin-nano-super-r36.4.7"), &no_commands);
    assert_eq!(
        got,
        json!({
            "cpu": {"model": "ARM Cortex-A78AE", "cores": 6},
            "memory": {"total_mb": 7620, "available_mb": 5348},
            "jetson": {
                "model": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
                "soc": "tegra234",
                "l4t": "R36.4.7",
                "unified_memory": true,
                "gpu_load_pct": 4.0,
                // cv0..cv2 have no readable temp (power-gated DLA/PVA).
                "temperatures_c": {
                    "cpu": 54.9, "gpu": 55.5, "soc0": 56.2, "soc1": 56.7,
                    "soc2": 55.6, "tj": 56.7
                },
                "power_mode": {"id": 2, "name": "MAXN_SUPER"}
            }
        })
    );
}

#[test]
fn jetson_agx_orin_r36_gated_gpu() {
    let got = describe_with(&fixture("jetson-agx-orin-64gb-r36.4.7"), &no_commands);
    assert_eq!(
        got["cpu"],
        json!({"model": "ARM Cortex-A78AE", "cores": 12})
    );
    // No MemAvailable in this meminfo: the field is simply absent.
    assert_eq!(got["memory"], json!({"total_mb": 62841}));
    let jetson = &got["jetson"];
    assert_eq!(jetson["model"], "NVIDIA Jetson AGX Orin Developer Kit");
    assert_eq!(jetson["soc"], "tegra234");
    assert_eq!(jetson["l4t"], "R36.4.7");
    assert_eq!(jetson["gpu_load_pct"], 12.0);
    // -256 °C is an offline sensor, not a reading.
    assert!(jetson["temperatures_c"].get("gpu").is_none());
    assert_eq!(jetson["temperatures_c"]["tj"], 56.7);
}

#[test]
fn jetson_agx_orin_r35() {
    let got = describe_with(&fixture("jetson-agx-orin-32gb-r35.4.1"), &no_commands);
    assert_eq!(
        got,
        json!({
            "cpu": {"model": "ARM Cortex-A78AE", "cores": 8},
            "memory": {"total_mb": 30622, "available_mb": 29184},
            "jetson": {
                "model": "Jetson AGX Orin Developer Kit",
                "soc": "tegra234",
                "l4t": "R35.4.1",
                "unified_memory": true,
                "gpu_load_pct": 0.0,
                "temperatures_c": {
                    "cpu": 44.4, "soc0": 42.1, "soc1": 43.0, "soc2": 42.6,
                    "tj": 44.4, "tboard_tegra": 36.0, "tdiode_tegra": 35.8
                }
            }
        })
    );
}

#[test]
fn x86_host_without_nvidia() {
    let root = fixture("x86_64-no-nvidia");
    let got = describe_with(&root, &|_, _| None);
    assert_eq!(
        got,
        json!({
            "cpu": {"model": "AMD EPYC", "cores": 2},
            "memory": {"total_mb": 24103, "available_mb": 23137}
        })
    );
    // A fixture root never runs the real nvidia-smi.
    assert_eq!(describe(&root), got);
}

#[test]
fn x86_host_with_nvidia_smi() {
    let got = describe_with(&fixture("x86_64-no-nvidia"), &|program, args| {
        assert_eq!(program, "nvidia-smi");
        assert_eq!(args, NVIDIA_SMI_ARGS);
        Some("NVIDIA GeForce RTX 4090, 24564, 8192, 87, 64\n".into())
    });
    assert_eq!(
        got["gpus"],
        json!([{
            "name": "NVIDIA GeForce RTX 4090",
            "memory_total_mb": 24564,
            "memory_used_mb": 8192,
            "utilization_pct": 87,
            "temperature_c": 64
        }])
    );
    assert!(got.get("jetson").is_none());
}

#[test]
fn nvidia_smi_output() {
    // JetPack 6 Orin, and unified-memory GB10: [N/A] columns are dropped.
    assert_eq!(
        json!(parse_nvidia_smi(
            "Orin (nvgpu), [N/A], [N/A], [N/A], [N/A]\n"
        )),
        json!([{"name": "Orin (nvgpu)"}])
    );
    assert_eq!(
        json!(parse_nvidia_smi("NVIDIA GB10, [N/A], [N/A], 3, 41\n")),
        json!([{"name": "NVIDIA GB10", "utilization_pct": 3, "temperature_c": 41}])
    );
    let two = "NVIDIA A100-SXM4-80GB, 81920, 0, 0, 33\nNVIDIA A100-SXM4-80GB, 81920, 512, [Not Supported], 35\n";
    let gpus = parse_nvidia_smi(two);
    assert_eq!(gpus.len(), 2);
    assert_eq!(gpus[1].memory_used_mb, Some(512.into()));
    assert_eq!(gpus[1].utilization_pct, None);
    assert!(parse_nvidia_smi("").is_empty());
    assert!(parse_nvidia_smi("No devices were found\n").is_empty());
    // An empty answer adds no `gpus` key at all.
    let got = describe_with(&fixture("x86_64-no-nvidia"), &|_, _| Some(String::new()));
    assert!(got.get("gpus").is_none());
}

#[test]
fn jetson_ignores_nvidia_smi() {
    let got = describe_with(&fixture("jetson-orin-nano-super-r36.4.7"), &|_, _| {
        Some("Orin (nvgpu), [N/A], [N/A], [N/A], [N/A]\n".into())
    });
    assert!(got.get("gpus").is_none());
}

#[test]
fn missing_root_is_empty_not_an_error() {
    let got = describe_with(&fixture("does-not-exist"), &|_, _| None);
    assert_eq!(got, json!({}));
}

#[test]
fn load_without_devfreq_uses_known_paths() {
    // glances' fixture layout: only platform/gpu.0/load, no devfreq class.
    let root = std::env::temp_dir().join(format!("usepod-hw-load-{}", std::process::id()));
    let dir = root.join("sys/devices/platform/gpu.0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("load"), "774\n").unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/nv_tegra_release"),
        "# R39 (release), REVISION: 2.0, GCID: 45755727, BOARD: generic, EABI: aarch64, DATE: Mon Jun  1 09:28:48 PM UTC 2026\n",
    )
    .unwrap();
    let got = describe_with(&root, &no_commands);
    std::fs::remove_dir_all(&root).unwrap();
    assert_eq!(
        got,
        json!({"jetson": {"l4t": "R39.2.0", "unified_memory": true, "gpu_load_pct": 77.4}})
    );
}

#[test]
fn nvpmodel_power_mode() {
    let conf = "< POWER_MODEL ID=0 NAME=MAXN >\nX\n< POWER_MODEL ID=1 NAME=10W >\n< PM_CONFIG DEFAULT=1 >\n";
    assert_eq!(parse_pmode("pmode:0001\n"), Some(1));
    assert_eq!(parse_pmode("pmode:0002 fmode:quiet\n"), Some(2));
    assert_eq!(parse_pmode("mode 2"), None);
    assert_eq!(nvpmodel_name(conf, 1).as_deref(), Some("10W"));
    assert_eq!(nvpmodel_name(conf, 7), None);
    assert_eq!(nvpmodel_default(conf), Some(1));
    // Without a status file the board runs the config's default.
    let root = std::env::temp_dir().join(format!("usepod-hw-nvp-{}", std::process::id()));
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/nvpmodel.conf"), conf).unwrap();
    let got = power_mode(&root);
    std::fs::remove_dir_all(&root).unwrap();
    assert_eq!(
        got,
        Some(PowerMode {
            id: 1,
            name: Some("10W".into())
        })
    );
    assert_eq!(power_mode(&fixture("x86_64-no-nvidia")), None);
    assert!(is_jetson(&fixture("jetson-nano-r32.7.1")));
    assert!(!is_jetson(&fixture("x86_64-no-nvidia")));
}

#[test]
fn igpu_found_through_devfreq() {
    // The of_node lookup, not the fallback list, finds each layout's GPU.
    let cases = [
        ("jetson-nano-r32.7.1", "57000000.gpu"),
        ("jetson-agx-orin-32gb-r35.4.1", "17000000.ga10b"),
        ("jetson-orin-nano-super-r36.4.7", "17000000.gpu"),
    ];
    for (tree, devfreq) in cases {
        let root = fixture(tree);
        assert_eq!(
            igpu_dir(&root),
            Some(root.join("sys/class/devfreq").join(devfreq).join("device")),
            "{tree}"
        );
    }
    assert_eq!(igpu_dir(&fixture("x86_64-no-nvidia")), None);
}

#[test]
fn reads_are_capped() {
    let path = std::env::temp_dir().join(format!("usepod-hw-cap-{}", std::process::id()));
    std::fs::write(&path, vec![b'x'; 100 * 1024]).unwrap();
    let read = read_capped(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(read.map(|bytes| bytes.len()), Some(64 * 1024));
}

#[test]
fn l4t_release_lines() {
    let r32 = "# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref, EABI: aarch64, DATE: Fri Jun  9 04:25:08 UTC 2023\n";
    assert_eq!(parse_l4t(r32).as_deref(), Some("R32.7.4"));
    let r35 =
        "# R35 (release), REVISION: 2.1, GCID: 32413640, BOARD: t186ref, EABI: aarch64, DATE: x";
    assert_eq!(parse_l4t(r35).as_deref(), Some("R35.2.1"));
    assert_eq!(parse_l4t(""), None);
    assert_eq!(parse_l4t("# R36 (release), GCID: 1"), None);
    assert_eq!(parse_l4t("# R3x (release), REVISION: 4.7"), None);
    assert_eq!(parse_l4t("# R36 (release), REVISION: 4.x"), None);
}

#[test]
fn device_tree_strings() {
    assert_eq!(nul_list(b"Jetson-AGX\0"), vec!["Jetson-AGX"]);
    let compatible = nul_list(
        b"nvidia,p3737-0000+p3701-0005\0nvidia,p3701-0005\0nvidia,tegra234\0nvidia,tegra23x\0",
    );
    assert_eq!(tegra_soc(&compatible).as_deref(), Some("tegra234"));
    assert_eq!(
        tegra_soc(&nul_list(b"raspberrypi,4-model-b\0brcm,bcm2711\0")),
        None
    );
    // A tegra compatible alone marks a Jetson (no nv_tegra_release in a container).
    assert_eq!(
        tegra_soc(&nul_list(b"nvidia,jetson-cv\0nvidia,tegra210\0")).as_deref(),
        Some("tegra210")
    );
}

#[test]
fn cpu_model_fallbacks() {
    let info = parse_cpuinfo("processor\t: 0\nHardware\t: BCM2835\nModel\t: Raspberry Pi\n");
    assert_eq!(cpu_model(&info, None).as_deref(), Some("BCM2835"));
    let big_little = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd05\n\nprocessor\t: 1\nCPU implementer\t: 0x41\nCPU part\t: 0xd05\n\nprocessor\t: 4\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n";
    let info = parse_cpuinfo(big_little);
    assert_eq!(info.processors, 3);
    assert_eq!(
        cpu_model(&info, None).as_deref(),
        Some("ARM Cortex-A55 + ARM Cortex-A76")
    );
    let carmel = "processor\t: 0\nmodel name\t: ARMv8 Processor rev 0 (v8l)\nCPU implementer\t: 0x4e\nCPU part\t: 0x004\n";
    assert_eq!(
        cpu_model(&parse_cpuinfo(carmel), None).as_deref(),
        Some("NVIDIA Carmel")
    );
    let unknown = "processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\nCPU implementer\t: 0x61\nCPU part\t: 0x022\n";
    assert_eq!(
        cpu_model(&parse_cpuinfo(unknown), None).as_deref(),
        Some("ARMv8 Processor rev 1 (v8l)")
    );
    let arm32 = "Processor\t: Cortex A57 Processor rev 1 (aarch64)\nprocessor\t: 0\n";
    assert_eq!(
        cpu_model(&parse_cpuinfo(arm32), None).as_deref(),
        Some("Cortex A57 Processor rev 1 (aarch64)")
    );
    assert_eq!(
        cpu_model(&CpuInfo::default(), Some("Jetson-AGX")).as_deref(),
        Some("Jetson-AGX")
    );
    assert_eq!(cpu_model(&CpuInfo::default(), None), None);
}

#[test]
fn small_parsers() {
    assert_eq!(parse_cpu_list("0-3\n"), Some(4));
    assert_eq!(parse_cpu_list("0-3,6,8-11"), Some(9));
    assert_eq!(parse_cpu_list("0"), Some(1));
    assert_eq!(parse_cpu_list(""), None);
    assert_eq!(parse_cpu_list("3-1"), None);
    assert_eq!(parse_load("1000\n"), Some(1000));
    assert_eq!(parse_load("1001\n"), None);
    assert_eq!(parse_load("\n"), None);
    assert_eq!(parse_millidegrees("-256000\n"), None);
    assert_eq!(parse_millidegrees("-39000\n"), Some(-39.0));
    assert_eq!(parse_millidegrees(""), None);
    assert_eq!(zone_key("GPU-therm").as_deref(), Some("gpu"));
    assert_eq!(zone_key("gpu-thermal\n").as_deref(), Some("gpu"));
    assert_eq!(zone_key("PMIC-Die"), None);
    assert_eq!(
        parse_meminfo("MemTotal:        4059136 kB\nMemAvailable: junk\n"),
        MemInfo {
            total_kb: Some(4059136),
            available_kb: None,
            nvmap_used_kb: None
        }
    );
}

#[test]
fn subprocess_command_runner() {
    assert_eq!(
        run_command("sh", &["-c", "echo hi"], Duration::from_secs(5)).as_deref(),
        Some("hi\n")
    );
    assert_eq!(
        run_command("sh", &["-c", "echo hi; exit 3"], Duration::from_secs(5)),
        None
    );
    assert_eq!(
        run_command("/nonexistent/nvidia-smi", &[], Duration::from_secs(5)),
        None
    );
    let started = Instant::now();
    assert_eq!(
        run_command("sleep", &["10"], Duration::from_millis(200)),
        None
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // A child that closes stdout but keeps running still times out.
    let started = Instant::now();
    assert_eq!(
        run_command(
            "sh",
            &["-c", "exec >&-; sleep 10"],
            Duration::from_millis(200)
        ),
        None
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
