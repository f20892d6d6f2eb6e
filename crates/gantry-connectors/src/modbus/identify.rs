//! Read Device Identification (function code 43, MEI type 14): the basic
//! objects VendorName, ProductCode and MajorMinorRevision, kept for the
//! asset inventory.

use std::time::Duration;

use serde::Serialize;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::{ReadCode, ReadDeviceIdentificationResponse};
use tokio_modbus::{Request, Response};

use super::poller::LinkError;

/// Object ids of the basic identification objects.
const VENDOR_NAME: u8 = 0x00;
const PRODUCT_CODE: u8 = 0x01;
const MAJOR_MINOR_REVISION: u8 = 0x02;
/// Stream access continues with `next_object_id`; a device that never
/// finishes is cut off after this many requests.
const MAX_FOLLOW_UPS: usize = 4;

/// What a device said about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceIdentity {
    pub vendor_name: Option<String>,
    pub product_code: Option<String>,
    pub revision: Option<String>,
}

impl DeviceIdentity {
    fn absorb(&mut self, response: &ReadDeviceIdentificationResponse) {
        for object in &response.device_id_objects {
            let text = || {
                let s = String::from_utf8_lossy(&object.value);
                let s = s.trim_matches(char::from(0)).trim();
                (!s.is_empty()).then(|| s.to_owned())
            };
            match object.id {
                VENDOR_NAME => self.vendor_name = text(),
                PRODUCT_CODE => self.product_code = text(),
                MAJOR_MINOR_REVISION => self.revision = text(),
                _ => {}
            }
        }
    }
}

/// Reads the basic identification objects. `Ok(None)`: the device answered
/// with an exception (it does not support the function). A timeout or
/// transport error is a [`LinkError`]: the caller must drop the connection.
pub(crate) async fn read_identity(
    ctx: &mut Context,
    timeout: Duration,
) -> Result<Option<DeviceIdentity>, LinkError> {
    let mut identity = DeviceIdentity::default();
    let mut next = VENDOR_NAME;
    for _ in 0..MAX_FOLLOW_UPS {
        let request = Request::ReadDeviceIdentification(ReadCode::Basic, next);
        let response = match tokio::time::timeout(timeout, ctx.call(request)).await {
            Err(_) => return Err(LinkError::Timeout),
            Ok(Err(e)) => return Err(LinkError::Transport(e.to_string())),
            Ok(Ok(Err(exception))) => {
                tracing::debug!(%exception, "device does not support read device identification");
                return Ok(None);
            }
            Ok(Ok(Ok(Response::ReadDeviceIdentification(r)))) => r,
            Ok(Ok(Ok(other))) => {
                return Err(LinkError::Transport(format!(
                    "unexpected response to read device identification: function {}",
                    other.function_code()
                )));
            }
        };
        identity.absorb(&response);
        if !response.more_follows || response.next_object_id <= next {
            break;
        }
        next = response.next_object_id;
    }
    Ok(Some(identity))
}
