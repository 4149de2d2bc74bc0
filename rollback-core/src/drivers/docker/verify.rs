//! Verify: each captured container as captured, every create field compared.

use crate::driver::{Context, Drift};
use crate::error::Result;
use crate::snapshot::Part;

use super::{compare, DockerDriver, Selector};

impl DockerDriver {
    pub(crate) async fn verify_all(&self, ctx: &Context, part: &Part) -> Result<Drift> {
        let d = self.connect().await?;
        let captured = Self::captured(part)?;
        let mut diffs = Vec::new();
        for c in &captured {
            let name = c["name"].as_str().unwrap_or("");
            if c["absent"] == true {
                if self.inspect(&d, name).await?.is_some() {
                    diffs.push(format!("container `{name}` exists, the snapshot has none"));
                }
                continue;
            }
            let (snap, _) = Self::load_inspect(ctx, part, c)?;
            match self.inspect(&d, name).await? {
                None => diffs.push(format!("container `{name}` does not exist")),
                Some(cur) => {
                    if cur["State"]["Running"].as_bool() != snap["State"]["Running"].as_bool() {
                        diffs.push(format!(
                            "container `{name}` is {}, snapshot has it {}",
                            cur["State"]["Status"].as_str().unwrap_or("?"),
                            snap["State"]["Status"].as_str().unwrap_or("?")
                        ));
                    }
                    let cur_mode = self.network_mode(&d, &cur).await?;
                    let want_mode = Self::captured_network_mode(&snap, c);
                    diffs.extend(
                        compare::differences(&cur, &snap, &cur_mode, &want_mode)
                            .into_iter()
                            .map(|d| format!("container `{name}`: {d}")),
                    );
                }
            }
        }
        if let Selector::Label(l) = &self.selector {
            let want: Vec<&str> = captured.iter().filter_map(|c| c["name"].as_str()).collect();
            for n in self.label_names(&d, l).await? {
                if !want.contains(&n.as_str()) {
                    diffs.push(format!("container `{n}` carries `{l}` but is not in the snapshot"));
                }
            }
        }
        Ok(Drift::from_differences(diffs))
    }
}
