"""The files inside the test guest's initramfs: busybox init's inittab and shell scripts.

Everything the guest does lives here, as text, so that the builder (``hack/guest.py``) can
hash it: a change to any script gives a new cache entry. What the guest does:

* loads the kernel modules the builder put in ``/lib/modules/load-order`` (virtio-pci,
  virtio-blk, virtio-net, the ACPI button, evdev) with ``insmod``;
* for each virtio disk ``/dev/vdX``: reads the marker block at :data:`MARKER_OFFSET`,
  increments its boot counter and writes it back (``fsync``), then prints
  ``vmresize-guest: disk vda bytes=… serial=… boot=N``;
* for each NIC: brings it up, gets a DHCP lease (user-mode networking answers DHCP) and
  prints ``vmresize-guest: nic eth0 mac=… driver=… ip=…``;
* prints ``vmresize-guest: ready disks=N nics=M boot=…`` when done;
* with ``vmresize.writer=vdb`` on the kernel command line, keeps writing numbered records
  (``VMRESIZE-WRITER seq=N``) into a ring at :data:`WRITER_OFFSET` of that disk, each one
  ``fsync``'d, until shutdown; it prints ``writer stopped seq=N`` (the last record written);
  ``vmresize.writer_slots=N`` makes the ring N records long (default
  :data:`WRITER_SLOTS`; 64 fit in one 64 KiB qcow2 cluster, so once the ring went round
  the writer allocates nothing more); ``vmresize.writer_start_s=N``: its first record N
  seconds after it printed ``writer start``;
* answers an ACPI power button press (``virsh shutdown``) from the moment it printed
  ``ready``: busybox ``acpid`` runs
  ``poweroff``, busybox init runs the shutdown script, which stops the writer, syncs,
  prints ``shutdown done`` and powers the machine off itself (``poweroff -f``: busybox
  init's own 2 s of pauses after the script are skipped, see :data:`RCK`).
  ``vmresize.marker=off`` skips the marker writes. ``vmresize.acpi_delay_s=N``: a guest
  slow to answer, which prints ``acpi power button`` at once and only begins its
  shutdown N seconds later (the writer writes on meanwhile).
"""

from __future__ import annotations

SECTOR = 512
MARKER_OFFSET = 1024 * 1024
"""Byte offset of the marker block on every disk (1 MiB: past any partition table)."""
WRITER_OFFSET = 2 * 1024 * 1024
"""Byte offset of the writer's ring of records."""
WRITER_SLOTS = 2048
"""The writer's ring holds this many 512-byte records (1 MiB), then wraps."""
PREFIX = "vmresize-guest:"

INITTAB = """\
::sysinit:/etc/init.d/rcS
::once:/etc/init.d/writer
::shutdown:/etc/init.d/rcK
"""

_COMMON = f"""\
export PATH=/bin
say() {{ echo "{PREFIX} $*"; }}
# Value of a vmresize.KEY=VALUE kernel argument (empty when absent).
arg() {{ for w in $(cat /proc/cmdline); do case "$w" in "vmresize.$1="*) echo "${{w#*=}}";;
  esac; done; }}
"""

RCS = f"""\
#!/bin/sh
{_COMMON}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp /var/log
# Keep the kernel quiet on the console from here on: tests parse what we print.
dmesg -n 1
say "init start uptime=$(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m.ko" || say "insmod $m failed"
done

# virtio devices are probed as their drivers load; wait (bounded) until every virtio disk
# and NIC the PCI bus shows has its block device or interface.
want() {{ grep -l "^$1$" /sys/bus/virtio/devices/*/device 2>/dev/null | wc -l; }}
have() {{ ls -d $1 2>/dev/null | wc -l; }}
i=0
while [ $i -lt 50 ]; do
  [ "$(have '/sys/block/vd*')" -ge "$(want 0x0002)" ] &&
    [ "$(have '/sys/class/net/eth*')" -ge "$(want 0x0001)" ] && break
  i=$((i + 1)); usleep 100000
done

marker_off=$(( {MARKER_OFFSET} / {SECTOR} ))
boot=0
ndisks=0
for sys in /sys/block/vd*; do
  [ -e "$sys" ] || continue
  d=${{sys##*/}}
  ndisks=$((ndisks + 1))
  sectors=$(cat "$sys/size")
  serial=$(cat "$sys/serial" 2>/dev/null)
  n=-
  if [ "$(arg marker)" != off ] && [ "$sectors" -gt $((marker_off + 1)) ]; then
    old=$(dd if=/dev/$d bs={SECTOR} skip=$marker_off count=1 2>/dev/null | head -c 80 |
          sed -n 's/^VMRESIZE-GUEST boot=\\([0-9]*\\) .*/\\1/p')
    n=$(( ${{old:-0}} + 1 ))
    if printf 'VMRESIZE-GUEST boot=%d disk=%s\\n' $n $d |
        dd of=/dev/$d bs={SECTOR} seek=$marker_off count=1 conv=sync,notrunc,fsync \\
          2>/dev/null; then
      [ $n -gt $boot ] && boot=$n
    else
      n=readonly
    fi
  fi
  say "disk $d bytes=$((sectors * {SECTOR})) serial=${{serial:--}} boot=$n"
done

nnics=0
for sys in /sys/class/net/eth*; do
  [ -e "$sys" ] || continue
  n=${{sys##*/}}
  nnics=$((nnics + 1))
  drv=$(basename "$(readlink "$sys/device/driver")")
  ip link set "$n" up
  udhcpc -i "$n" -n -q -t 5 -T 1 -s /etc/udhcpc.script >/dev/null 2>&1
  addr=$(ip -4 -o addr show dev "$n" | sed -n 's/.* inet \\([0-9.]*\\).*/\\1/p')
  say "nic $n mac=$(cat "$sys/address") driver=${{drv:--}} ip=${{addr:-none}}"
done

# acpid runs before "ready" is printed and has opened every input device: a power button
# pressed right after "ready" must not be lost (nothing would answer it).
inputs=$(ls /dev/input/event* 2>/dev/null | wc -l)
acpid -d -c /etc/acpi &
i=0
while [ "$(ls -l /proc/$!/fd 2>/dev/null | grep -c /dev/input/event)" -lt "$inputs" ] &&
    [ $i -lt 100 ]; do
  usleep 50000; i=$((i + 1))
done
say "ready disks=$ndisks nics=$nnics boot=$boot inputs=$inputs \\
uptime=$(cut -d' ' -f1 /proc/uptime)"
"""

WRITER = f"""\
#!/bin/sh
{_COMMON}
dev=$(arg writer)
[ -n "$dev" ] || exit 0
delay=$(arg writer_delay_ms)
delay=$(( ${{delay:-10}} * 1000 ))
slots=$(arg writer_slots)
slots=${{slots:-{WRITER_SLOTS}}}
echo $$ > /run/writer.pid
seq=0
stop=
# ash runs a trap between two commands; the loop checks the flag only after $seq was
# updated, so "stopped seq=N" always names the last record written and fsync'd.
trap 'stop=1' TERM
say "writer start dev=$dev"
wait=$(arg writer_start_s)
[ -n "$wait" ] && sleep "$wait"
while [ -z "$stop" ]; do
  n=$((seq + 1))
  slot=$(( {WRITER_OFFSET} / {SECTOR} + (n - 1) % slots ))
  if printf 'VMRESIZE-WRITER seq=%d\\n' $n |
      dd of=/dev/$dev bs={SECTOR} seek=$slot count=1 conv=sync,notrunc,fsync 2>/dev/null; then
    seq=$n
    [ $((seq % 100)) -eq 0 ] && say "writer seq=$seq"
  else
    say "writer error seq=$n"; sleep 1
  fi
  [ $delay -gt 0 ] && usleep $delay
done
say "writer stopped seq=$seq"
rm -f /run/writer.pid
"""

RCK = f"""\
#!/bin/sh
{_COMMON}
say "shutdown start"
if [ -f /run/writer.pid ]; then
  pid=$(cat /run/writer.pid)
  kill -TERM "$pid"
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 150 ]; do usleep 20000; i=$((i + 1)); done
fi
sync
say "shutdown done"
# Power off here rather than return to busybox init: after this script it would send
# SIGTERM to every process, sleep 1 s, SIGKILL, and sleep 1 s more "for the console"
# before reboot(2): 2 s of every shutdown that nothing in this guest needs (the writer
# has stopped, every record was fsync'd and the disks are synced; nothing else holds
# state). stty waits for the console's output to drain (TCSADRAIN), so "shutdown done"
# reaches the serial log; poweroff -f syncs again and calls reboot(2).
stty -F /dev/console onlcr 2>/dev/null
poweroff -f
"""

POWER_BUTTON = f"""\
#!/bin/sh
{_COMMON}
echo "{PREFIX} acpi power button" > /dev/console
wait=$(arg acpi_delay_s)
[ -n "$wait" ] && sleep "$wait"
exec /bin/poweroff
"""

UDHCPC_SCRIPT = """\
#!/bin/sh
# udhcpc hook: only the address matters (user-mode networking's 10.0.2.15/24).
case "$1" in
  bound|renew) ip addr flush dev "$interface"; ifconfig "$interface" "$ip" netmask "$subnet";;
  deconfig) ip addr flush dev "$interface";;
esac
"""

#: Path in the initramfs -> (mode, text).
FILES: dict[str, tuple[int, str]] = {
    "etc/inittab": (0o644, INITTAB),
    "etc/init.d/rcS": (0o755, RCS),
    "etc/init.d/rcK": (0o755, RCK),
    "etc/init.d/writer": (0o755, WRITER),
    # busybox acpid maps the power button to PWRF/00000080 and runs that file, relative
    # to its configuration directory.
    "etc/acpi/PWRF/00000080": (0o755, POWER_BUTTON),
    "etc/udhcpc.script": (0o755, UDHCPC_SCRIPT),
}
