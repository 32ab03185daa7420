//! The routing plan for 1,000, 10,000 and 100,000 recipients (target: 100,000 in under
//! 100 ms). Recipients mix licenses, virtual users, devices and primary contacts.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flare_shared::domain::routing::{Recipient, RoutingContext, plan};
use flare_shared::*;
use std::hint::black_box;

fn users(n: usize) -> Vec<User> {
    (0..n)
        .map(|i| {
            let mut contacts = vec![];
            if i % 7 != 0 {
                contacts.push(Contact::Mobile {
                    value: PhoneNumber::parse(&format!("+1415{:07}", i % 10_000_000)).unwrap(),
                    primary: true,
                });
            }
            if i % 5 != 0 {
                contacts.push(Contact::Email {
                    value: EmailAddress::parse(&format!("user{i}@example.org")).unwrap(),
                    primary: true,
                });
            }
            User {
                user_id: UserId::parse(&format!("u-{i}")).unwrap(),
                name: format!("User {i}"),
                license: License::ALL[i % License::ALL.len()],
                is_virtual: i % 11 == 0,
                control_center_id: None,
                contacts: Contacts::new(contacts).unwrap(),
                emergency_contacts: vec![],
                devices: if i % 3 == 0 {
                    vec![]
                } else {
                    vec![Device {
                        device_id: DeviceId::parse(&format!("d-{i}")).unwrap(),
                        platform: Platform::Fcm,
                        token: format!("t{i}"),
                        endpoint: Some(format!("arn:endpoint/{i}")),
                    }]
                },
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let settings = CommunicationSettings {
        dispatch: Method::AppThenSmsEmail,
        dispatch_virtual_users: true,
        ..Default::default()
    };
    let ctx = RoutingContext {
        category: Category::Dispatch,
        settings: &settings,
        sms_provider: Some(Provider::Sns),
        email_provider: Provider::Ses,
    };
    let mut group = c.benchmark_group("routing_plan");
    group.sample_size(20);
    for n in [1_000, 10_000, 100_000] {
        group.throughput(Throughput::Elements(n as u64));
        // The users are made on the first call only, and not at all for a size a
        // filter leaves out (the smoke run's: 100,000 users take seconds in a test build).
        let mut all: Option<Vec<User>> = None;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            let all = all.get_or_insert_with(|| users(n));
            let recipients: Vec<Recipient> = all.iter().map(Recipient::User).collect();
            b.iter(|| plan(black_box(&ctx), black_box(&recipients)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
