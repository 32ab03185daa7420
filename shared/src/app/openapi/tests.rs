use super::*;

#[test]
fn every_route_is_described_and_nothing_else() {
    let doc = document();
    let mut described = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let route = ROUTES
                .iter()
                .find(|r| r.path == path && r.method.eq_ignore_ascii_case(method))
                .unwrap_or_else(|| panic!("{method} {path} is not served"));
            assert_eq!(op["operationId"], route.id);
            let params: Vec<&str> = route.params().collect();
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(params, declared, "{method} {path}");
            described += 1;
        }
    }
    assert_eq!(described, ROUTES.len());
}

#[test]
fn every_reference_resolves_and_every_link_names_an_operation() {
    let doc = document();
    let text = doc.to_string();
    for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &piece[..piece.find('"').unwrap()];
        assert!(doc["components"]["schemas"].get(name).is_some(), "{name}");
    }
    for route in ROUTES {
        for (_, op) in doc["paths"][route.path].as_object().unwrap() {
            for (_, resp) in op["responses"].as_object().unwrap() {
                for (_, link) in resp["links"].as_object().into_iter().flatten() {
                    let id = link["operationId"].as_str().unwrap();
                    assert!(ROUTES.iter().any(|r| r.id == id), "link to {id}");
                }
            }
        }
    }
}

#[test]
fn every_sample_event_is_a_served_route_and_its_body_the_example() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/api");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let listed: Vec<&str> = SAMPLE_EVENTS.iter().map(|(n, _)| *n).collect();
    assert_eq!(on_disk, listed, "SAMPLE_EVENTS lists events/api");
    let doc = document();
    for (name, raw) in SAMPLE_EVENTS {
        let event: Value = serde_json::from_str(raw).unwrap();
        let key = event["routeKey"].as_str().unwrap();
        let (method, path) = key.split_once(' ').unwrap();
        let route = ROUTES
            .iter()
            .find(|r| r.method == method && r.path == path)
            .unwrap_or_else(|| panic!("{name}: {key} is not a route"));
        if let Some(body) = event["body"].as_str() {
            let op = &doc["paths"][route.path][method.to_ascii_lowercase()];
            let example = &op["requestBody"]["content"]["application/json"]["example"];
            assert_eq!(
                *example,
                serde_json::from_str::<Value>(body).unwrap(),
                "{name}"
            );
        }
    }
}
