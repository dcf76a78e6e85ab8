//! The cpu fault burns CPU in its threads until cleared. Alone in its own test binary so no other
//! test moves the process's CPU time.

mod support;

use std::time::{Duration, Instant};

use support::{eventually, settings_b, start};

#[tokio::test]
async fn cpu_fault_spins_until_cleared() {
    let b = start(settings_b()).await;
    let cpu = "process_cpu_seconds_total";
    let before = b.metric(cpu).await.unwrap();
    let (status, state) = b.inject("cpu", r#"{"threads": 2}"#).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["active"][0]["threads"], 2);
    assert_eq!(b.metric(r#"service_fault_active{fault="cpu"}"#).await, Some(1.0));
    eventually("0.5 s of CPU to be burnt", Duration::from_secs(20), || async {
        (b.metric(cpu).await.unwrap() - before >= 0.5).then_some(())
    })
    .await;

    let (status, _) = b.clear("cpu").await;
    assert_eq!(status, 200);
    // Once the threads have seen the stop flag, CPU time stays nearly flat: over a 1 s window
    // at most 0.3 s is used, where two spinning threads would use up to 2 s.
    eventually("CPU use to stop", Duration::from_secs(20), || async {
        let start_cpu = b.metric(cpu).await.unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (b.metric(cpu).await.unwrap() - start_cpu < 0.3).then_some(())
    })
    .await;
    b.stop().await;
}
