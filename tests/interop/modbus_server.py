"""A small Modbus TCP device for the interop tests (pymodbus 3.16 SimDevice API).

    python3 modbus_server.py PORT

Serves unit id 1 on 127.0.0.1:PORT until killed. Stop it with SIGTERM/SIGKILL
and start it again on the same port to simulate a device going away.

Layout (0-based protocol addresses):
  holding 0-1   float32 1200.5          (speed, scale 0.5 -> 600.25)
  holding 2-3   uint32  65538           (count, scale 10 -> 655380)
  holding 4     uint16  1               (state: 0 stopped, 1 running, 2 faulted)
  holding 5-6   string  "B-42"          (batch)
  holding 8     0b100                   (alarm = bit 2)
  holding 50    not defined             -> exception "illegal data address"
  input   0     int16   653             (temperature, scale 0.1, offset -40 -> 25.3)
  coil    3     True                    (running)
  discrete 0    True
Device identification: VendorName "Gantry Interop", ProductCode "PYM-1",
MajorMinorRevision "3.16".
"""

from __future__ import annotations

import asyncio
import sys

from pymodbus.pdu.device import ModbusDeviceIdentification
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def device() -> SimDevice:
    coils = [SimData(0, values=[False, False, False, True] + [False] * 12, datatype=DataType.BITS)]
    discrete = [SimData(0, values=[True] + [False] * 15, datatype=DataType.BITS)]
    holding = [
        SimData(0, values=1200.5, datatype=DataType.FLOAT32),
        SimData(2, values=65538, datatype=DataType.UINT32),
        SimData(4, values=1, datatype=DataType.REGISTERS),
        SimData(5, values="B-42", datatype=DataType.STRING),
        SimData(7, values=0, datatype=DataType.REGISTERS),
        SimData(8, values=0b100, datatype=DataType.REGISTERS),
        SimData(9, count=10, values=0, datatype=DataType.REGISTERS),
        # 19..99 is not defined, so 50 answers "illegal data address".
    ]
    inputs = [SimData(0, values=653, datatype=DataType.INT16)]
    identity = ModbusDeviceIdentification(
        info_name={
            "VendorName": "Gantry Interop",
            "ProductCode": "PYM-1",
            "MajorMinorRevision": "3.16",
        }
    )
    return SimDevice(1, simdata=(coils, discrete, holding, inputs), identity=identity)


async def main(port: int) -> None:
    sim = device()
    server = ModbusTcpServer(sim, identity=sim.identity, address=("127.0.0.1", port))
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
